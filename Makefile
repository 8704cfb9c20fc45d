# Every target runs the idempotent set-up first (a no-op when the stack is already complete).
PYTHON ?= python3
export PYTHON

.PHONY: install test demo
install:
	bash tools/install.sh

test: install
	$(PYTHON) -m pytest tests -q -p no:cacheprovider

# The main job: tools/compare_backbones.py on synthetic sonar data: YOLOX and Cascade R-CNN with
# every backbone + each head's baseline (CSPDarknet-s, ResNet-50) trained, tested and benchmarked
# on CPU; table and plots in work_dirs/demo/report/ (~20 min on 2 cores).
demo: install
	$(PYTHON) tools/demo.py
