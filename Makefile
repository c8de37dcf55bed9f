# Two commands set up everything on a fresh machine:
#   make test   venv + torch + dependencies, build the extension, run ctest and pytest
#   make demo   the same set-up, then a short training run with samples, and the ops demo
# Variables: PYTHON (interpreter for the venv), VENV, TORCH (pip requirement for torch).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1
# nvcc, where present, lets the build compile the CUDA kernels (no GPU needed).
CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda))
export CUDA_HOME

BIN := $(abspath $(VENV))/bin
PY := $(BIN)/python
export PATH := $(BIN):$(PATH)

.PHONY: test demo build ctest pytest bench aarch64-check cuda-on-cpu clean

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)" -r requirements-dev.txt
	@# the venv imports pymakemore from this checkout (where build_ext --inplace puts _C)
	$(PY) -c "import site, sys; open(site.getsitepackages()[0] + '/pymakemore-checkout.pth', 'w').write(sys.argv[1])" "$(CURDIR)"
	touch $@

build: $(VENV)/.installed
	$(PY) setup.py --quiet build_ext --inplace

ctest: $(VENV)/.installed
	$(BIN)/cmake -S . -B build/cmake -G Ninja -DCMAKE_MAKE_PROGRAM=$(BIN)/ninja >/dev/null
	$(BIN)/cmake --build build/cmake
	cd build/cmake && $(BIN)/ctest --output-on-failure

# The whole suite at the best instruction-set level this CPU runs, then the kernels' tests at
# each lower one (PYMAKEMORE_CPU_LEVEL; see csrc/cpu/this_level.h).
KERNEL_TESTS := tests/test_cross_entropy.py tests/test_embedding.py tests/test_linear.py \
	tests/test_engines.py tests/test_autograd_compile.py tests/test_linear_cross_entropy.py \
	tests/test_batch_norm.py tests/test_chain_engine.py
LOWER_LEVELS = $(shell $(PY) -c "import pymakemore._C as C; l = ['portable', 'avx2', 'avx512']; \
	print(*l[:l.index(C.best_cpu_level())])")

pytest: build
	$(PY) -m pytest
	for level in $(LOWER_LEVELS); do \
	  echo "== kernels' tests at level $$level"; \
	  PYMAKEMORE_CPU_LEVEL=$$level $(PY) -m pytest -q -p no:cacheprovider $(KERNEL_TESTS) || exit 1; \
	done

test: ctest pytest

# the lecture MLP on the built-in names, a quarter of the lecture's schedule, then the ops demo
demo: build
	$(PY) -m pymakemore.train -o out/demo --max-steps 50000 --eval-every 25000
	$(PY) bench/demo_ops.py

bench: build
	$(PY) -m pytest bench --benchmark-only --benchmark-group-by=group

# The torch-free kernels and their C++ tests built for aarch64 (portable level, NEON) and run
# under qemu-user. Needs Debian's g++-aarch64-linux-gnu and qemu-user; not part of `make test`.
AARCH64_CXX ?= aarch64-linux-gnu-g++
aarch64-check:
	mkdir -p build/aarch64
	$(AARCH64_CXX) -std=c++20 -O2 -fopenmp-simd -ffp-contract=fast -Icsrc/include -Icsrc/cpu \
	  -Itests/cpp csrc/cpu/*.cpp csrc/cpu/levels/*/*.cpp tests/cpp/test_cpu_kernels.cpp \
	  tests/cpp/levels/*.cpp -lpthread -o build/aarch64/test_cpu_kernels
	qemu-aarch64 -L /usr/aarch64-linux-gnu build/aarch64/test_cpu_kernels

# The CUDA kernels executed on the CPU through HIP-CPU (tests/cuda_on_cpu/harness.cpp), with
# the threads of each block taking turns in both orders. Needs HIP-CPU (HIP_CPU, default
# ../shared/hip-cpu) and Debian's libtbb-dev, installed here when missing if run as root.
HIP_CPU ?= $(firstword $(wildcard ../shared/hip-cpu))
cuda-on-cpu: $(VENV)/.installed
	@test -n "$(HIP_CPU)" && test -f "$(HIP_CPU)/include/hip/hip_runtime.h" || \
	  { echo "cuda-on-cpu: HIP-CPU not found (set HIP_CPU=<path>)"; exit 1; }
	@test -e /usr/include/tbb/tbb.h || test -e /usr/include/oneapi/tbb.h || \
	  { test "$$(id -u)" = 0 && { apt-get install -y -q libtbb-dev >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q libtbb-dev >/dev/null; }; }; } || \
	  { echo "cuda-on-cpu: needs libtbb-dev (sudo apt-get install libtbb-dev)"; exit 1; }
	$(BIN)/cmake -S . -B build/cmake -G Ninja -DCMAKE_MAKE_PROGRAM=$(BIN)/ninja \
	  -DPYMAKEMORE_HIP_CPU=$(abspath $(HIP_CPU)) -DPython3_EXECUTABLE=$(PY) >/dev/null
	$(BIN)/cmake --build build/cmake --target cuda_on_cpu
	build/cmake/cuda_on_cpu
	HIP_CPU_SIM_REVERSE=1 build/cmake/cuda_on_cpu

clean:
	rm -rf build pymakemore/*.so *.egg-info
