"""The converter that makes csrc/cuda buildable against HIP-CPU (tests/cuda_on_cpu/convert.py):
each rewrite on the forms the kernels use, and a clear error for the forms it cannot read."""
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("convert", ROOT / "tests/cuda_on_cpu/convert.py")
convert = importlib.util.module_from_spec(spec)
spec.loader.exec_module(convert)


def test_launch_with_template_arguments_and_multiline_arguments():
    src = ("  rows<T, Index, 32><<<blocks_for(n, kThreads / 32), kThreads, 0, stream>>>(\n"
           "      x, t, n);\n")
    out = convert.convert(src)
    assert "<<<" not in out
    assert ('::cuda_on_cpu::launch("rows", blocks_for(n, kThreads / 32), kThreads, 0, stream, '
            "[=](auto&&... xs) { rows<T, Index, 32>(xs...); }, x, t, n)\n;") in out
    assert out.count("\n") == src.count("\n")  # line numbers kept for the compiler's messages


def test_launch_without_shared_bytes_or_stream():
    out = convert.convert("k<<<1, 32>>>(p);")
    assert out == '::cuda_on_cpu::launch("k", 1, 32, 0, nullptr, [=](auto&&... xs) { k(xs...); }, p);'


def test_shared_arrays_get_their_hooks_and_comments_are_ignored():
    src = ("// __shared__ arrays in a comment; are not code\n"
           "__global__ void __launch_bounds__(kThreads) f(int n) {\n"
           "  __shared__ double sums[kN], weights[kN];\n"
           "  __shared__ A tile[kDepth][kTile + 1];\n"
           "  extern __shared__ float smem[];\n"
           "}\n")
    out = convert.convert(src)
    assert "{ ::cuda_on_cpu::kernel_entry(kThreads);" in out
    assert "::cuda_on_cpu::shared_array(&sums, sizeof(sums));" in out
    assert "::cuda_on_cpu::shared_array(&weights, sizeof(weights));" in out
    assert "::cuda_on_cpu::shared_array(&tile, sizeof(tile));" in out
    assert "float* smem = ::cuda_on_cpu::dynamic_shared<float>();" in out
    assert out.count("shared_array") == 3


def test_kernel_without_launch_bounds_is_checked_against_the_device_limit():
    out = convert.convert("template <typename T>\n__global__ void g(T* p) { p[0] = 1; }\n")
    assert "{ ::cuda_on_cpu::kernel_entry(1024); p[0] = 1; }" in out


def test_forms_it_cannot_read_are_errors():
    with pytest.raises(convert.ConvertError, match="only arrays"):
        convert.convert("__global__ void f() { __shared__ float total; }")
    with pytest.raises(convert.ConvertError, match="configuration"):
        convert.convert("k<<<1>>>(p);")


def test_every_cuda_source_converts():
    for source in sorted((ROOT / "csrc/cuda").glob("*.cu")):
        out = convert.convert(source.read_text())
        assert "<<<" not in out and "extern __shared__" not in out, source.name
