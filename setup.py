"""Builds pymakemore._C: the fused ops' CPU kernels, and their CUDA kernels where nvcc and a
CUDA build of torch are present (a GPU is not needed to compile them).

Environment:
  PYMAKEMORE_CUDA=0|1        force the CUDA sources off / on (default: on when possible)
  PYMAKEMORE_CPU_ARCH        a -march for the whole build (default none: a portable build;
                             the kernels are compiled for every instruction-set level anyway
                             and choose one when loaded, see csrc/cpu/this_level.h)
  TORCH_CUDA_ARCH_LIST       GPU architectures (default when no GPU is visible: 8.0;9.0+PTX)
"""
import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension


def sources(pattern):
    return sorted(glob.glob(os.path.join("csrc", pattern)))


def want_cuda():
    choice = os.environ.get("PYMAKEMORE_CUDA", "auto")
    if choice == "0":
        return False
    possible = torch.version.cuda is not None and CUDA_HOME is not None
    if choice == "1" and not possible:
        raise RuntimeError("PYMAKEMORE_CUDA=1 needs a CUDA build of torch and CUDA_HOME (nvcc)")
    return possible and bool(sources("cuda/*.cu"))


cpu_arch = os.environ.get("PYMAKEMORE_CPU_ARCH", "")
# -fopenmp: at::parallel_for is inline OpenMP in torch's headers; without it every op runs on
# one thread. The libgomp it links resolves to the copy torch has already loaded.
# -Wno-(maybe-)uninitialized: GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_*).
cxx_flags = ["-O3", "-fopenmp", "-ffp-contract=fast", "-Wno-uninitialized",
             "-Wno-maybe-uninitialized"] + ([f"-march={cpu_arch}"] if cpu_arch else [])
link_flags = ["-fopenmp"]
# csrc/torch: each op's slice, <op>.cpp (with its CPU kernels) and, in a CUDA build,
# <op>_cuda.cpp; a new op's files are picked up without editing this list
ext_sources = (sources("cpu/*.cpp") + sources("cpu/levels/*/*.cpp") +
               [s for s in sources("torch/*.cpp") if not s.endswith("_cuda.cpp")])
include_dirs = [os.path.abspath("csrc/include"), os.path.abspath("csrc/cpu")]

if want_cuda():
    if not torch.cuda.is_available():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    extension = CUDAExtension(
        "pymakemore._C",
        ext_sources + sources("cuda/*.cu") + sources("torch/*_cuda.cpp"),
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags,
                            "nvcc": ["-O3"]},
        extra_link_args=link_flags,
    )
else:
    extension = CppExtension("pymakemore._C", ext_sources, include_dirs=include_dirs,
                             extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags)

setup(
    name="pymakemore",
    version="0.1.0",
    description="Character-level language models (makemore) on fused C++/CUDA ops",
    packages=find_packages(include=["pymakemore", "pymakemore.*"]),
    package_data={"pymakemore": ["data/names.txt"]},
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "tqdm", "matplotlib"],
)
