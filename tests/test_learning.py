"""Training really learns: YOLOX + FasterNet-T0 on a small synthetic side-scan sonar set (CPU).

Untrained, the detector's VOC mAP50 is ~0 (random boxes; measured below, not assumed). After a few
minutes of training on 96 images it must reach MIN_MAP50 on 48 unseen images: the synthetic targets
(bright highlight + shadow, distinct shapes) are learnable, so anything below that threshold means
the backbone, neck wiring, normalisation or schedule is broken.
"""
import pytest

MIN_MAP50 = 0.30
EPOCHS = 24
SIZE = 256


def learning_config(data_root, work_dir, epochs):
    from mmlightbb.analysis.pipeline import short_schedule_config
    return short_schedule_config(
        'configs/yolox_fasternet.py', data_root, work_dir, epochs, SIZE,
        cfg_options={'model.backbone.arch': 't0', 'model.neck.in_channels': [80, 160, 320]})


@pytest.fixture(scope='module')
def sonar_root(tmp_path_factory):
    from mmlightbb.datasets import make_sonar_dataset
    root = str(tmp_path_factory.mktemp('sonar'))
    make_sonar_dataset(root, num_train=96, num_val=48, size=SIZE, seed=0)
    return root + '/'


@pytest.mark.slow
def test_training_raises_map50_well_above_untrained(sonar_root, tmp_path):
    import mmlightbb  # noqa: F401
    from mmlightbb.engine import build_runner  # the config's runner, as tools/train.py builds it
    untrained = build_runner(learning_config(sonar_root, str(tmp_path / 'untrained'), 1))
    before = untrained.test()['pascal_voc/mAP']
    runner = build_runner(learning_config(sonar_root, str(tmp_path / 'trained'), EPOCHS))
    runner.train()
    after = runner.test()['pascal_voc/mAP']
    # Two runs in one process (as in make demo) keep their logs apart: the training losses are in
    # the trained run's own dir, none in the untrained one's.
    assert runner.visualizer is not untrained.visualizer
    assert (tmp_path / 'trained' / runner.timestamp / 'vis_data' / 'scalars.json').is_file()
    assert not (tmp_path / 'untrained' / untrained.timestamp / 'vis_data' / 'scalars.json').exists()
    assert before < 0.05, f'untrained mAP50 {before:.3f} should be ~0'
    assert after >= MIN_MAP50, f'mAP50 after {EPOCHS} epochs: {after:.3f} < {MIN_MAP50}'
