"""Checks that need CuPy installed but no GPU: CuPy imports without one.

Every array function the ops call as ``xp.<name>`` must exist in CuPy too,
or the GPU path breaks the first time someone runs it.
"""
import ast
import pathlib

import pytest

import tinydense

PACKAGE = pathlib.Path(tinydense.__file__).parent

cupy = pytest.importorskip("cupy", reason="CuPy not installed (README's GPU line: pip install -e '.[gpu]')")


def _xp_attribute_chains():
    """Every dotted name rooted at ``xp`` in tinydense's source, e.g. 'add.at'."""
    chains = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                parts, inner = [], node
                while isinstance(inner, ast.Attribute):
                    parts.append(inner.attr)
                    inner = inner.value
                if isinstance(inner, ast.Name) and inner.id == "xp":
                    chains.setdefault(".".join(reversed(parts)), path.name)
    return chains


def test_scan_finds_the_ops_array_calls():
    chains = _xp_attribute_chains()
    # the scan itself must work, or the test below would pass vacuously
    assert {"matmul", "zeros", "concatenate"} <= {c.split(".")[0] for c in chains}


def test_every_xp_function_exists_in_cupy():
    missing = []
    for chain, where in sorted(_xp_attribute_chains().items()):
        obj = cupy
        for part in chain.split("."):
            if not hasattr(obj, part):
                missing.append(f"xp.{chain} (used in {where})")
                break
            obj = getattr(obj, part)
    assert not missing, "CuPy lacks: " + ", ".join(missing)


def test_gpu_random_generator_has_what_dropout_draws():
    # backend.rng(cupy) returns a cupy.random.Generator (making one needs a GPU, so check
    # the class); dropout calls .random(shape, dtype=), init .standard_normal(shape, dtype=)
    assert hasattr(cupy.random, "default_rng")
    assert hasattr(cupy.random.Generator, "random")
    assert hasattr(cupy.random.Generator, "standard_normal")


def test_tinydense_imports_with_cupy_present():
    assert tinydense.backend.cupy is cupy
    assert tinydense.backend.get_array_module(tinydense.tensor([1.0]).data).__name__ == "numpy"
    assert tinydense.cuda.is_available() == tinydense.backend.cuda_available()


def _gpu_kernels():
    """Every backend.GPUKernel defined at the top level of a tinydense module."""
    import importlib

    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = "tinydense." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        module = importlib.import_module(name.removesuffix(".__init__"))
        for attr, value in vars(module).items():
            if isinstance(value, tinydense.backend.GPUKernel):
                found[f"{module.__name__}.{attr}"] = value
    return found


def test_every_gpu_kernel_is_a_valid_cupy_kernel():
    """CuPy parses a kernel's parameters when it is made (no GPU needed; the C body is
    compiled on first use, on a GPU: benchmarks/gpu_parity.py runs them there)."""
    kernels = _gpu_kernels()
    assert "tinydense.ops.bn_relu_fold._RELU_AFFINE" in kernels, sorted(kernels)
    for where, k in kernels.items():
        made = cupy.ElementwiseKernel(k.in_params, k.out_params, k.body, k.name)
        declared = {p.split()[-1] for p in (k.in_params + "," + k.out_params).split(",")}
        for out_name in (p.split()[-1] for p in k.out_params.split(",")):
            assert f"{out_name} =" in k.body, f"{where} never writes its output {out_name}"
        assert made.name == k.name and declared, where
