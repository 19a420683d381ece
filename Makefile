# Front door. Both targets start with scripts/setup.sh (installs missing Debian packages).
#   make run    build, create a demo store on first use, and serve VGG16 on :50051
#   make test   build and run every test
#   make image-test   build the CPU image without Docker (buildah) and check it runs (root)
#   make sanitize     ASan + UBSan over every test, TSan over the concurrent ones
#   make test-debian13   the whole suite in a Debian 13 root (LibTorch 2.6, torch 2.6) (root)
#   make test-debian13-asan   the same under ASan + UBSan (what .ci/run runs there) (root)
BUILD ?= build
STORE ?= model_store
JOBS ?= $(shell nproc)
PYTHON ?= /usr/bin/python3
ARGS ?=
# Line tables only (-g1): backtraces and sanitizer reports keep files and lines, and
# the build takes about a third less time than with full debug information (-g:
# measured 82 -> 49 s for one file); for a debugger, CMAKE_FLAGS=-DCMAKE_BUILD_TYPE=RelWithDebInfo.
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG"

.PHONY: setup build run test test-debian13 test-debian13-asan image-test bench clean format sanitize

setup:
	bash scripts/setup.sh

build: setup
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j$(JOBS)

$(STORE)/vgg16:
	$(PYTHON) scripts/make_demo_store.py $(STORE)

run: build $(STORE)/vgg16
	$(BUILD)/server/model-server --store $(STORE) --model vgg16=vgg16 $(ARGS)

test: build
	cd $(BUILD) && ctest -j$(JOBS) --output-on-failure --timeout 1200

# (setup: the host's npm tools, which the root mounts)
test-debian13: setup
	JOBS=$(JOBS) bash scripts/debian13.sh

test-debian13-asan: setup
	JOBS=$(JOBS) bash scripts/debian13.sh --asan

image-test: build
	BUILD=$(BUILD) bash scripts/image_test.sh

bench: build
	bash bench/run_bench.sh

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD)

sanitize: build
	bash scripts/sanitize.sh all
