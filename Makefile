# Every target runs the idempotent set-up first (a no-op when the stack is already complete).
PYTHON ?= python3
export PYTHON

.PHONY: install test
install:
	bash tools/install.sh

test: install
	$(PYTHON) -m pytest tests -q -p no:cacheprovider

