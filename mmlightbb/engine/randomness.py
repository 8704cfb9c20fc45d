"""Exactly resumable training randomness: every random draw of a training run is a function of the
config's seed and of *where* in the run it happens, never of what the process did before.

Why stock mmengine is not exactly resumable
    mmengine seeds python ``random``, numpy and torch once, when the Runner is built. A run
    resumed from ``epoch_3.pth`` therefore draws epoch 4's augmentations (Mosaic, MixUp,
    RandomAffine, YOLOXHSVRandomAug, RandomFlip run in the main process when ``num_workers=0``),
    YOLOX's ``BatchSyncRandomResize`` sizes, drop-path masks and R-CNN proposal sampling from the
    freshly seeded generators, while the uninterrupted run draws them from generators that have
    advanced through epochs 1-3. Data-loader workers are seeded with ``seed + rank + worker_id``
    when they start; persistent workers keep advancing their generators across epochs, so a
    resumed run (new workers) differs again. ``BatchSyncRandomResize`` also carries the input size
    it drew last into the next epoch, and no checkpoint holds it.

The design: reseed at fixed points, keyed by position, instead of saving generator states
    * Main process: before every training iteration python ``random``, ``numpy.random`` and torch
      (CPU and every CUDA device) are reseeded from a hash of (seed, rank, global iteration), and
      before every epoch from (seed, rank, epoch). Whatever runs in the main process between two
      such points (the model's forward/backward, batch augments, hooks) draws the same numbers in
      an uninterrupted and in a resumed run, however the process got there.
    * Samples: every index the train loader sends to its fetcher carries the seed of its sample,
      a hash of (seed, rank, epoch, pass over the loader in this epoch, position of the sample in
      that pass). It is an ``int`` subclass (:class:`SeededIndex`) made in the main process by the
      loader's index sampler, so it reaches the fetcher unchanged in the main process and in any
      worker, persistent or not, forked or spawned: torch sends indices to the workers one batch
      at a time, after ``iter()``. The dataset's ``__getitems__`` (torch's batched-fetch
      protocol, set on the loader's outermost dataset object) reseeds ``random``, ``numpy.random``
      and the CPU torch generator with that seed right before ``dataset[index]``, then fetches
      with a plain ``int``. All draws of the whole pipeline of that sample, including the extra
      images that Mosaic/MixUp pick inside mmdet's ``MultiImageMixDataset``, are thus a function
      of the sample's position, whatever worker fetches it and whatever it fetched before. In the
      main process (``num_workers=0``) the generators' states are restored after the fetch, and
      the loader gets its own ``torch.Generator`` (reseeded per epoch) for the workers' base seed
      that ``iter()`` draws, so data loading draws nothing from the main process's streams.
    * Keying samples by position, not by dataset index, keeps the draws of a sample that a
      sampler yields twice in one epoch (class-aware or infinite samplers) independent.
    * Saving generator states in checkpoints instead was rejected: a checkpoint is written at an
      epoch boundary, but worker generator states live in other processes (and die with
      non-persistent workers), and the results would still depend on ``num_workers``. With the
      reseeding above the results are the same with the data loaded in the main process or by
      workers, persistent or not (tested with 0 and 2 workers), so an interrupted epoch is
      replayed from its start with exactly the same draws, and a run may even be resumed with
      another ``num_workers``. The only non-random state kept across epochs,
      ``BatchSyncRandomResize``'s current input size (any model submodule with an
      ``_input_size`` attribute), is saved in the checkpoint
      (``checkpoint['mmlightbb_randomness']``, plain ints and lists:
      ``torch.load(weights_only=True)`` accepts it) and restored on resume.
    * The cost per sample and per iteration (a few reseeds) is measured in docs/reliability.md.

Active only when the config sets ``randomness.seed``; otherwise the Runner trains as stock
mmengine does and logs one line at train start saying how to make the run exactly resumable.
Selected with ``runner_type='RecoverableRunner'`` (:mod:`mmlightbb.engine.runner`), whose
``build_train_loop`` (the first thing ``Runner.train`` does) calls :func:`prepare_exact_resumption`
to build the train loader exactly as the loop would, seed it before anything iterates it
(``IterBasedTrainLoop`` does in its constructor) and add :class:`ExactResumeHook`. Covers mmengine's ``Runner`` and its subclasses, epoch- and
iteration-based loops, map-style datasets, any number of processes. Not covered: transforms that
draw from their own generators (``np.random.default_rng()`` without a seed) or keep state across
samples (mmdet's ``CachedMosaic``/``CachedMixUp``), randomness in a custom ``collate_fn``, iterable
datasets (one warning). Bitwise equality on GPUs additionally needs deterministic kernels
(``randomness.deterministic=True``).
"""
import functools
import hashlib
import logging
import operator
import random
from typing import Any, Dict, Optional

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

__all__ = ['CHECKPOINT_KEY', 'NOT_RESUMABLE_MESSAGE', 'ExactResumeHook', 'SeededIndex',
           'derive_seed', 'seed_main_process', 'install_seeded_loading', 'prepare_exact_resumption']

CHECKPOINT_KEY = 'mmlightbb_randomness'
NOT_RESUMABLE_MESSAGE = (
    'randomness.seed is not set: a resumed run will not repeat the random draws '
    '(augmentations, drop-path) of an uninterrupted one; set randomness=dict(seed=0) in the config '
    'to make training exactly resumable')


def _key_text(key: tuple) -> str:
    return repr(tuple(int(part) if isinstance(part, (int, np.integer)) else part for part in key))


def _seed_of(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), 'little')


def derive_seed(*key) -> int:
    """A 64-bit seed from a tuple of ints/strings (stable across processes and runs, unlike
    ``hash``)."""
    return _seed_of(_key_text(key))


def _seed_globals(seed: int, all_devices: bool) -> None:
    random.seed(seed)
    np.random.seed((seed ^ (seed >> 32)) & 0xFFFFFFFF)  # legacy numpy takes 32 bits
    if all_devices:
        torch.manual_seed(seed)  # CPU and every CUDA device
    else:
        torch.default_generator.manual_seed(seed)


def seed_main_process(*key) -> None:
    """Reseed python ``random``, ``numpy.random`` and torch (CPU and all CUDA devices) from
    ``derive_seed(*key)``."""
    _seed_globals(derive_seed(*key), all_devices=True)


class SeededIndex(int):
    """A dataset index carrying ``seed``, the seed of every random draw made while fetching it."""

    def __new__(cls, value: int, seed: int):
        obj = super().__new__(cls, value)
        obj.seed = seed
        return obj

    def __reduce__(self):  # compact and explicit when sent to a worker process
        return SeededIndex, (int(self), self.seed)

    def __repr__(self) -> str:
        return f'SeededIndex({int(self)}, seed={self.seed})'


class _SeedState:
    """What the train loader's index sampler needs to key samples: set by the hook in the main
    process (the indices carry it to the workers)."""

    def __init__(self, seed: int, rank: int, epoch: int):
        self.seed, self.rank, self.epoch = int(seed), int(rank), int(epoch)
        self.passes: Dict[Any, int] = {}  # iter() calls over the loader, per epoch
        self.warned = False
        self.generator: Optional[torch.Generator] = None  # the loader's, if we gave it one

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.generator is not None:
            self.generator.manual_seed(derive_seed('loader', self.seed, self.rank, epoch))


class _SeededIndices:
    """The loader's index sampler (batch sampler or sampler), each index tagged with its seed."""

    def __init__(self, indices, state: _SeedState):
        self.indices = indices
        self.state = state

    def __len__(self) -> int:
        return len(self.indices)

    def __getattr__(self, name):
        if name.startswith('__') or name in ('indices', 'state'):
            raise AttributeError(name)
        return getattr(self.indices, name)

    def __iter__(self):
        state = self.state
        epoch = state.epoch
        this_pass = state.passes.get(epoch, 0)
        state.passes[epoch] = this_pass + 1
        position = 0
        # derive_seed('sample', seed, rank, epoch, pass, position), the constant part made once
        prefix = _key_text(('sample', state.seed, state.rank, epoch, this_pass))[:-1] + ', '

        def tag(index):
            nonlocal position
            try:
                value = operator.index(index)
            except TypeError:
                if not state.warned:
                    state.warned = True
                    print_log(f'exact resumption: the train loader yields indices of type '
                              f'{type(index).__name__}, not int; their samples are fetched with '
                              'unseeded randomness', logger='current', level=logging.WARNING)
                return index
            seeded = SeededIndex(value, _seed_of(f'{prefix}{position})'))
            position += 1
            return seeded

        for item in self.indices:
            if isinstance(item, (list, tuple)):
                yield [tag(index) for index in item]
            else:
                yield tag(item)


@functools.lru_cache(maxsize=None)
def _seeded_loader_class(cls: type) -> type:
    """``cls`` whose index sampler tags every index with its seed (no new instance layout, so a
    built loader's class can be switched to it)."""
    untagged = cls._index_sampler

    def _index_sampler(self):
        return _SeededIndices(untagged.__get__(self, type(self)), self._mmlightbb_seed_state)

    return type(f'Seeded{cls.__name__}', (cls,),
                dict(__slots__=(), _index_sampler=property(_index_sampler),
                     _mmlightbb_seeded=True, __module__=cls.__module__))


class _SeededFetch:
    """``dataset.__getitems__``: reseed, then fetch each sample with a plain int index (through
    the dataset class's own ``__getitems__``, one sample at a time, if it has one)."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.batched = getattr(type(dataset), '__getitems__', None)  # a dataset's own one

    def __call__(self, indices):
        in_main_process = get_worker_info() is None
        if in_main_process:  # data loading must not advance the main process's streams
            saved = (random.getstate(), np.random.get_state(),
                     torch.default_generator.get_state())
        try:
            samples = []
            for index in indices:
                if isinstance(index, SeededIndex):
                    _seed_globals(index.seed, all_devices=False)
                if self.batched is None:
                    samples.append(self.dataset[_plain(index)])
                else:  # the dataset's own batched fetch, one sample at a time
                    samples.extend(self.batched(self.dataset, [_plain(index)]))
            return samples
        finally:
            if in_main_process:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.default_generator.set_state(saved[2])


def _plain(index):
    return int(index) if isinstance(index, SeededIndex) else index


def install_seeded_loading(loader, state: _SeedState) -> Optional[str]:
    """Make ``loader`` fetch every sample under its own seed (see the module docstring).

    Returns None when done, else why it could not be done (the caller logs it). Idempotent.
    """
    if not isinstance(loader, DataLoader):
        return f'the train loader is a {type(loader).__name__}, not a torch DataLoader'
    dataset = loader.dataset
    if isinstance(dataset, IterableDataset):
        return f'the train dataset {type(dataset).__name__} is an IterableDataset'
    if not isinstance(dataset.__dict__.get('__getitems__'), _SeededFetch):
        try:
            dataset.__getitems__ = _SeededFetch(dataset)
        except (AttributeError, TypeError) as err:
            return f'cannot set __getitems__ on {type(dataset).__name__} ({err})'
    loader._mmlightbb_seed_state = state
    if loader.generator is None:  # iter() draws the workers' base seed: not from torch's stream
        loader.generator = state.generator = torch.Generator()
        state.start_epoch(state.epoch)
    if not getattr(type(loader), '_mmlightbb_seeded', False):
        loader.__class__ = _seeded_loader_class(type(loader))
    if getattr(loader, '_iterator', None) is not None:  # persistent workers started unseeded
        loader._iterator = None
    return None


def _batch_augments(runner):
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    return {name: module for name, module in model.named_modules()
            if hasattr(module, '_input_size')}


class ExactResumeHook(Hook):
    """Reseeds the main process per epoch and iteration, starts each epoch's sample keys, and
    saves/restores batch-augment sizes (see the module docstring).

    Added by :func:`prepare_exact_resumption` when the config sets ``randomness.seed``, with the
    state that the train loader's indices are tagged from.
    """

    priority = 'HIGHEST'  # reseed before any other hook draws in the same stage

    def __init__(self, state: _SeedState, problem: Optional[str] = None):
        self.state = state
        self.problem = problem  # why the samples are not seeded, if they are not

    def before_train(self, runner) -> None:
        self.state.seed = int(runner.seed)  # after a resume: the checkpoint's, as mmengine's
        if self.problem is None:
            runner.logger.info(
                f'exact resumption: random draws are reseeded from (seed={runner.seed}, rank, '
                'epoch, iteration) in the main process and from (seed, rank, epoch, sample '
                'position) for every sample (mmlightbb.engine.randomness)')
        else:
            runner.logger.warning(f'exact resumption covers the main process only: {self.problem}')

    def before_train_epoch(self, runner) -> None:
        self.state.start_epoch(runner.epoch)
        seed_main_process('epoch', self.state.seed, self.state.rank, runner.epoch)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        seed_main_process('iter', self.state.seed, self.state.rank, runner.iter)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        sizes = {}
        for name, module in _batch_augments(runner).items():
            size = module._input_size
            sizes[name] = None if size is None else [int(v) for v in size]
        checkpoint[CHECKPOINT_KEY] = dict(batch_augment_sizes=sizes)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not getattr(runner, '_resume', False):  # load_from: weights only, fresh schedule
            return
        sizes = checkpoint.get(CHECKPOINT_KEY, {}).get('batch_augment_sizes', {})
        for name, module in _batch_augments(runner).items():
            if name in sizes:
                size = sizes[name]
                module._input_size = None if size is None else tuple(size)


def prepare_exact_resumption(runner) -> None:
    """Before ``runner`` builds its train loop: when the config sets ``randomness.seed``, build
    the train loader exactly as the loop would, seed its samples and add
    :class:`ExactResumeHook`, so that nothing iterates the loader unseeded
    (``IterBasedTrainLoop`` starts iterating in its constructor). Without a seed it logs
    :data:`NOT_RESUMABLE_MESSAGE` and changes nothing. Idempotent."""
    if any(isinstance(hook, ExactResumeHook) for hook in runner._hooks):
        return
    randomness = runner._randomness_cfg or {}
    if randomness.get('seed') is None:
        runner.logger.info(NOT_RESUMABLE_MESSAGE)
        return
    if isinstance(runner._train_dataloader, dict):  # BaseLoop.__init__'s call, made first
        runner._train_dataloader = runner.build_dataloader(
            runner._train_dataloader, seed=runner.seed,
            diff_rank_seed=randomness.get('diff_rank_seed', False))
    state = _SeedState(runner.seed, get_rank(), 0)
    problem = install_seeded_loading(runner._train_dataloader, state)
    runner.register_hook(ExactResumeHook(state, problem))
