"""Write the intersphinx inventories of torch, Python and NumPy that the docs link to.

The docs build offline (CI has no internet), so the projects' own ``objects.inv``
cannot be downloaded. Instead, this script writes small inventories in Sphinx's
format (version 2: a header, then zlib-compressed ``name domain:role priority uri
display`` lines) for the names our pages and docstrings use, with the URLs of each
project's online documentation; ``docs/conf.py`` points ``intersphinx_mapping`` at
them. A name missing here renders as plain text. To add one, add it below and run

    python docs/_inv/make_inventories.py

(``tests/test_docs_render.py`` checks that the committed files are this script's
output and that the built pages link ``torch.Tensor``.) With internet access, the
real inventories can replace these: ``intersphinx_mapping = {"torch":
("https://docs.pytorch.org/docs/stable/", None), ...}``.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# project: (base URL, version, [(name, domain:role, page#anchor)]); "$" stands for the name.
TORCH_GENERATED = [
    "torch.nn.Module", "torch.nn.Linear", "torch.nn.Conv2d", "torch.nn.BatchNorm2d",
    "torch.nn.Sequential", "torch.nn.CrossEntropyLoss", "torch.nn.SyncBatchNorm",
    "torch.nn.parallel.DistributedDataParallel", "torch.Generator",
]  # fmt: skip
TORCH_FUNCTIONS = [
    "torch.nn.functional.binary_cross_entropy", "torch.nn.functional.cross_entropy",
    "torch.nn.functional.interpolate", "torch.nn.functional.log_softmax",
    "torch.nn.functional.logsigmoid", "torch.nn.functional.normalize",
    "torch.compile", "torch.autograd.gradcheck",
]  # fmt: skip
INVENTORIES: dict[str, tuple[str, str, list[tuple[str, str, str]]]] = {
    "torch": (
        "https://docs.pytorch.org/docs/stable/",
        "stable",
        [
            ("torch.Tensor", "py:class", "tensors.html#$"),
            ("torch.dtype", "py:class", "tensor_attributes.html#$"),
            ("torch.device", "py:class", "tensor_attributes.html#$"),
            ("torch.Size", "py:class", "size.html#$"),
            ("torch.autocast", "py:class", "amp.html#$"),
            ("torch.nn.parameter.Parameter", "py:class", "generated/$.html#$"),
            ("torch.nn.Parameter", "py:class", "generated/torch.nn.parameter.Parameter.html"),
            ("torch.utils.data.DataLoader", "py:class", "data.html#$"),
            ("torch.utils.data.Dataset", "py:class", "data.html#$"),
            ("torch.utils.data.Sampler", "py:class", "data.html#$"),
            ("torch.utils.data.distributed.DistributedSampler", "py:class", "data.html#$"),
            (
                "torch.utils.data.DistributedSampler",
                "py:class",
                "data.html#torch.utils.data.distributed.DistributedSampler",
            ),
            ("torch.distributed", "py:module", "distributed.html#module-$"),
            ("torch.distributed.all_gather", "py:function", "distributed.html#$"),
            ("torch.distributed.all_reduce", "py:function", "distributed.html#$"),
            ("torch.distributed.init_process_group", "py:function", "distributed.html#$"),
            ("torch.distributed.ProcessGroup", "py:class", "distributed.html#$"),
            ("torch.optim.Optimizer", "py:class", "optim.html#$"),
            ("torch.optim.AdamW", "py:class", "generated/$.html#$"),
            *((name, "py:class", "generated/$.html#$") for name in TORCH_GENERATED),
            *((name, "py:function", "generated/$.html#$") for name in TORCH_FUNCTIONS),
        ],
    ),
    "python": (
        "https://docs.python.org/3/",
        "3",
        [
            *(
                (name, "py:class", "library/functions.html#$")
                for name in ("int", "float", "str", "bool", "tuple", "list", "dict", "object")
            ),
            ("None", "py:data", "library/constants.html#$"),
            *(
                (name, "py:exception", "library/exceptions.html#$")
                for name in ("ValueError", "TypeError", "RuntimeError", "FileNotFoundError")
            ),
            *(
                (f"collections.abc.{name}", "py:class", "library/collections.abc.html#$")
                for name in ("Sequence", "Callable", "Mapping", "Iterable", "Iterator")
            ),
            *(
                (f"typing.{name}", "py:data", "library/typing.html#$")
                for name in ("Any", "Optional", "Union", "Literal")
            ),
            ("pathlib.Path", "py:class", "library/pathlib.html#$"),
        ],
    ),
    "numpy": (
        "https://numpy.org/doc/stable/",
        "stable",
        [
            ("numpy.ndarray", "py:class", "reference/generated/$.html#$"),
            ("numpy.dtype", "py:class", "reference/generated/$.html#$"),
        ],
    ),
}


def inventory(project: str, version: str, entries: list[tuple[str, str, str]]) -> bytes:
    """One ``objects.inv`` file (Sphinx inventory version 2) as bytes."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    lines = "".join(
        f"{name} {role} 1 {uri.replace('$', name)} -\n" for name, role, uri in sorted(entries)
    )
    return header.encode() + zlib.compress(lines.encode(), 9)


def main() -> None:
    for project, (_, version, entries) in INVENTORIES.items():
        path = HERE / f"{project}.inv"
        path.write_bytes(inventory(project, version, entries))
        print(f"{path.relative_to(HERE.parents[1])}: {len(entries)} names")


if __name__ == "__main__":
    main()
