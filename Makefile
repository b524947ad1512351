# Every target sets up what it needs, so `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED := $(abspath ../shared)

# Real assets (DESIGN.md, "Assets"): the copies in ../shared unless already set.
export KEEPWHAT_WHISPER_TINY ?= $(SHARED)/models/whisper-tiny.en
export KEEPWHAT_WHISPER_BASE ?= $(SHARED)/models/whisper-base-encoder
export KEEPWHAT_FSDD ?= $(SHARED)/data/fsdd/recordings

# FFmpeg's shared libraries, which torchcodec (datasets' audio decoder) loads; fluidsynth and every
# GM SoundFont Debian ships (MuseScore General aside: the outside check), from which
# benchmarks/audio_data/gm_instruments.py and gm_sources.py render their tasks.
APT_PACKAGES := libavcodec59 libavformat59 libavutil57 libswresample4 libswscale6 \
	libavdevice59 libavfilter8 fluidsynth fluid-soundfont-gm timgm6mb-soundfont \
	csound-soundfont opl3-soundfont

.PHONY: install system-deps test test-all lint format demo bench cards

install: system-deps $(VENV)/.installed

system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if ! command -v apt-get >/dev/null; then \
			echo "Install FFmpeg's shared libraries (libavcodec and friends): $$missing" >&2; exit 1; \
		fi; \
		sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$sudo apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# The fast suite: tiny models built in code, no real-weight training (tests marked `slow` left
# out), on every core. `make test-all` runs everything, as CI does, also on every core: one torch
# thread a worker (the recipes' subprocesses inherit it), so workers do not fight over cores;
# work stealing, so the few long tests (real weights, the quickstart) do not queue behind each
# other. No test asserts a timing (speed is claimed from benchmarks/, never from tests).
test: lint
	$(BIN)/python -m pytest -q -m "not slow" -n auto

test-all: lint
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --dist worksteal --durations 15

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: install
	recipes/fsdd_demo.sh

bench: install
	$(BIN)/python benchmarks/train_cost.py --out benchmarks/results/train_cost_cpu.json

# One rendered example card per artifact kind, next to the templates in model_cards/.
cards: install
	$(BIN)/python model_cards/render_examples.py
