# axmoe: two commands a user needs, `make demo` and `make test`; the rest are their steps.
# Both work from nothing: they create .venv, install the package (which builds the C++
# custom-op library), fetch onnxruntime headers and Fashion-MNIST when missing, then run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CACHE := .cache
INSTALLED := $(VENV)/.axmoe-installed
export AXMOE_DATA_DIR ?= $(abspath $(CACHE)/datasets)
FMNIST := $(AXMOE_DATA_DIR)/fashion-mnist/t10k-labels-idx1-ubyte.gz
SYSTEM_FMNIST := /usr/share/datasets/fashion-mnist
# onnxruntime's C API headers: $ONNXRUNTIME_INCLUDE_DIR, Debian's libonnxruntime-dev, or a
# local copy of that package unpacked into .cache (no root needed).
ifeq ($(ONNXRUNTIME_INCLUDE_DIR)$(wildcard /usr/include/onnxruntime/onnxruntime_c_api.h),)
ORT_HEADERS := $(CACHE)/onnxruntime-dev/root/usr/include/onnxruntime/onnxruntime_c_api.h
endif
NATIVE_SOURCES := pyproject.toml CMakeLists.txt $(shell find runtime/ort -name '*.cc' -o -name '*.h' 2>/dev/null)
PYTEST_WORKERS ?= 2
# aarch64 cross toolchain for the ARM tests: system packages (root: apt-get) or Debian's
# packages unpacked into .cache/cross with wrappers in .cache/cross/bin (no root)
CROSS := $(CACHE)/cross
SYSROOT := $(CACHE)/aarch64-sysroot
export PATH := $(abspath $(CROSS))/bin:$(PATH)

.PHONY: demo test lint install data ort-headers arm-tools sanitize bench clean

demo: install data
	$(PY) -m eval sweep configs/demo.yaml

test: lint data arm-tools
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) tests

# ruff, configured in pyproject.toml ([tool.ruff])
lint: install
	$(PY) -m ruff check .

install: $(INSTALLED)

# ASan + UBSan build of the custom-op kernels, run against the C++ kernel tester and the
# differential tests (libstdc++ is preloaded too, or ASan aborts on onnxruntime's exceptions).
SANITIZE_BUILD := build/sanitize
sanitize: install data
	cmake -S . -B $(SANITIZE_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAXMOE_SANITIZE=ON -DAXMOE_BUILD_TESTER=ON \
	    $(if $(ORT_HEADERS),-DONNXRUNTIME_INCLUDE_DIR=$(abspath $(dir $(ORT_HEADERS))))
	cmake --build $(SANITIZE_BUILD) -j2
	$(SANITIZE_BUILD)/axmoe_kernel_tester
	LD_PRELOAD="$$(g++ -print-file-name=libasan.so) $$(g++ -print-file-name=libstdc++.so)" \
	ASAN_OPTIONS=detect_leaks=0:log_path=$(SANITIZE_BUILD)/asan UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	AXMOE_ORT_LIBRARY=$(abspath $(SANITIZE_BUILD))/libaxmoe_ort.so \
	$(PY) -m pytest -q -p no:cacheprovider tests/runtime \
	    --deselect tests/runtime/test_kernel_tester.py --deselect tests/runtime/test_aarch64_qemu.py \
	    --deselect tests/runtime/test_bundle.py --deselect tests/runtime/test_aarch64_ort.py

# Benchmarks (numbers in BENCHMARKS.md; never part of `make test`)
bench: install data
	$(PY) -m runtime.bench --min-time 1.5 --rounds 10
	$(PY) benchmarks/retrain_step.py
	$(PY) benchmarks/whole_model.py

# What the ARM tests need: the cross compiler and qemu-aarch64, and an arm64 sysroot with
# python3.11 and PyPI's aarch64 wheels (TVM runtime) for running under qemu
arm-tools: $(CROSS)/.complete $(SYSROOT)/.complete

$(CROSS)/.complete:
	scripts/cross_toolchain.sh $(CROSS)

.PHONY: test-aarch64 aarch64-sysroot
aarch64-sysroot: $(SYSROOT)/.complete

$(SYSROOT)/.complete: scripts/aarch64_sysroot.sh | $(INSTALLED)
	PYTHON=$(PY) scripts/aarch64_sysroot.sh $(SYSROOT)

# only the ARM tests (`make test` runs them too)
test-aarch64: arm-tools
	$(PY) -m pytest -q tests/runtime/test_aarch64_qemu.py tests/runtime/test_aarch64_ort.py tests/runtime/test_bundle.py \
	    tests/runtime/tvm/test_aarch64.py -rs

$(PY):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): $(PY) $(NATIVE_SOURCES) | $(ORT_HEADERS)
	$(PY) -m pip install --quiet --progress-bar off -e '.[dev]' 2> >(grep -v "^WARNING: Location" >&2)
	touch $@

ort-headers: $(ORT_HEADERS)

$(CACHE)/onnxruntime-dev/root/usr/include/onnxruntime/onnxruntime_c_api.h:
	scripts/fetch_deb.sh libonnxruntime-dev $(CACHE)/onnxruntime-dev

data: $(FMNIST)

$(FMNIST):
	mkdir -p $(AXMOE_DATA_DIR)/fashion-mnist
	if [ -f $(SYSTEM_FMNIST)/t10k-labels-idx1-ubyte.gz ]; then \
	    cp $(SYSTEM_FMNIST)/*-ubyte.gz $(AXMOE_DATA_DIR)/fashion-mnist/; \
	else \
	    scripts/fetch_deb.sh dataset-fashion-mnist $(CACHE)/fashion-mnist-deb && \
	    mv $(CACHE)/fashion-mnist-deb/root$(SYSTEM_FMNIST)/*-ubyte.gz $(AXMOE_DATA_DIR)/fashion-mnist/ && \
	    rm -rf $(CACHE)/fashion-mnist-deb; \
	fi

clean:
	rm -rf build $(VENV) $(CACHE)
