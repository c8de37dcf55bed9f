"""Rewrites one CUDA source of csrc/cuda so that a C++ compiler builds it against HIP-CPU and
the shim headers beside this file (tests/cuda_on_cpu/shim). Four rewrites, nothing else:

- `kernel<<<grid, block, shared, stream>>>(args);` becomes
  `::cuda_on_cpu::launch("kernel", grid, block, shared, stream, <a call of kernel>, args);`
  (the shim checks the configuration against the GPU's limits, can make the launch fail, and
  runs it);
- `extern __shared__ T name[];` becomes a pointer to the block's dynamic shared memory;
- every `__shared__` array is followed by a call that fills it with NaN bytes at the start of
  each block and counts its size against the block's shared-memory limit;
- every `__global__` function's body starts with a call that checks the launch against its
  `__launch_bounds__`.

Usage: python convert.py input.cu output.cpp
"""
import re
import sys

LAUNCH_BOUNDS = re.compile(r"__launch_bounds__\s*\(([^()]*)\)")
DYNAMIC_SHARED = re.compile(r"extern\s+__shared__\s+([\w:<>, ]+?)\s+(\w+)\s*\[\s*\]\s*;")


class ConvertError(Exception):
    pass


def matching(text, start, opening, closing):
    """Index just past the bracket that closes the one at `start`."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == opening:
            depth += 1
        elif text[i] == closing:
            depth -= 1
            if depth == 0:
                return i + 1
    raise ConvertError(f"unbalanced {opening}{closing} from offset {start}")


def split_top_level(text):
    """Splits on the commas outside (), [], {} and template brackets."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


def kernel_name_start(text, end):
    """Start of the kernel expression (a name, maybe qualified, maybe with template arguments)
    that ends at `end` (just before `<<<`)."""
    i = end
    while i > 0 and text[i - 1].isspace():
        i -= 1
    if text[i - 1] == ">":  # template arguments: walk back to the matching '<'
        depth = 0
        while True:
            i -= 1
            if text[i] == ">":
                depth += 1
            elif text[i] == "<":
                depth -= 1
                if depth == 0:
                    break
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_:"):
        i -= 1
    return i


def convert_launches(text):
    out, pos = [], 0
    while True:
        at = text.find("<<<", pos)
        if at < 0:
            out.append(text[pos:])
            return "".join(out)
        start = kernel_name_start(text, at)
        kernel = text[start:at].strip()
        close = text.find(">>>", at)
        config = split_top_level(text[at + 3:close])
        if len(config) == 2:
            config += ["0", "nullptr"]
        elif len(config) == 3:
            config += ["nullptr"]
        if len(config) != 4:
            raise ConvertError(f"launch of {kernel}: cannot read its configuration")
        paren = text.find("(", close + 3)
        if text[close + 3:paren].strip():
            raise ConvertError(f"launch of {kernel}: no argument list after >>>")
        args_end = matching(text, paren, "(", ")")
        args = text[paren + 1:args_end - 1].strip()
        name = kernel.split("<")[0].split("::")[-1]
        call = (f'::cuda_on_cpu::launch("{name}", {", ".join(config)}, '
                f"[=](auto&&... xs) {{ {kernel}(xs...); }}")
        call += f", {args})" if args else ")"
        # the launch's line breaks after it, so the lines below keep their numbers
        call += "\n" * (text.count("\n", start, args_end) - call.count("\n"))
        out.append(text[pos:start])
        out.append(call)
        pos = args_end


def shared_names(declaration):
    """The array names declared by the text between `__shared__` and `;`."""
    names, depth = [], 0
    for m in re.finditer(r"[\[\]<>()]|\w+", declaration):
        token = m.group(0)
        if token in "[<(":
            depth += 1
        elif token in "]>)":
            depth -= 1
        elif depth == 0 and declaration[m.end():].lstrip().startswith("["):
            names.append(token)
    if not names:
        raise ConvertError(f"__shared__ {declaration}: only arrays are supported")
    return names


def convert_shared(text):
    def dynamic(m):
        type_, name = m.group(1), m.group(2)
        return f"{type_}* {name} = ::cuda_on_cpu::dynamic_shared<{type_}>();"

    text = DYNAMIC_SHARED.sub(dynamic, text)
    if "extern __shared__" in text:
        raise ConvertError("an extern __shared__ declaration the converter cannot read")

    out, pos = [], 0
    for m in re.finditer(r"__shared__([^;]*);", text):
        names = shared_names(m.group(1))
        hooks = " ".join(f"::cuda_on_cpu::shared_array(&{n}, sizeof({n}));" for n in names)
        out.append(text[pos:m.end()])
        out.append(" " + hooks)
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def convert_kernels(text):
    out, pos = [], 0
    for m in re.finditer(r"__global__\b", text):
        if m.start() < pos:
            continue
        body = text.find("{", m.end())
        signature = text[m.end():body]
        if ";" in signature:  # a declaration without a body
            continue
        bounds = LAUNCH_BOUNDS.search(signature)
        bound = bounds.group(1) if bounds else "1024"
        out.append(text[pos:body + 1])
        out.append(f" ::cuda_on_cpu::kernel_entry({bound});")
        pos = body + 1
    out.append(text[pos:])
    return "".join(out)


def blank_comments(text):
    """Comments replaced by spaces (line breaks kept, so line numbers hold): the rewrites then
    see code only."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append("".join(c if c == "\n" else " " for c in text[i:end]))
            i = end
        elif text[i] in "\"'":
            quote, j = text[i], i + 1
            while j < n and text[j] != quote:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def convert(text):
    return convert_launches(convert_shared(convert_kernels(blank_comments(text))))


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: convert.py input.cu output.cpp")
    source, target = argv[1], argv[2]
    with open(source, encoding="utf-8") as f:
        text = f.read()
    try:
        converted = convert(text)
    except ConvertError as e:
        sys.exit(f"{source}: {e}")
    with open(target, "w", encoding="utf-8") as f:
        f.write(f"// Generated from {source} by tests/cuda_on_cpu/convert.py: do not edit.\n")
        f.write(f'#line 1 "{source}"\n')
        f.write(converted)


if __name__ == "__main__":
    main(sys.argv)
