"""`jaxnets.jit`: jax.jit with jaxnets' compiler options (same values, the options in the compiled program,
jax.jit's arguments passed through), the library's inference entry points compiled with it, and the fallback
to XLA's defaults when the installed jaxlib refuses the option."""
import functools
import uuid
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets
from jaxnets import layers
from jaxnets.train import (CPU_COMPILER_OPTIONS, compile_steps, default_compiler_options, ensemble_predict,
                           evaluation, tta_predict)

ON_CPU = jax.devices()[0].platform == "cpu"


def conv(x, kernel):
    return layers.conv(x, kernel, padding=1)


def _ynn_fusions(jitted, *args) -> int:
    """References to YNNPACK library fusions in the compiled program (a 32-channel convolution makes one under XLA's
    defaults)."""
    return jitted.lower(*args).compile().as_text().count("ynn_fusion")


@pytest.fixture
def conv_inputs():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(4, 8, 8, 32)).astype(np.float32), rng.normal(size=(3, 3, 32, 32)).astype(np.float32) / 17)


def test_same_values_as_jax_jit(conv_inputs):
    got, want = jaxnets.jit(conv)(*conv_inputs), jax.jit(conv)(*conv_inputs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # float32: the two convolutions sum in other orders
    loss = lambda x, k: jnp.sum(conv(x, k) ** 2)  # noqa: E731
    got, want = jaxnets.jit(jax.grad(loss, argnums=(0, 1)))(*conv_inputs), jax.grad(loss, argnums=(0, 1))(*conv_inputs)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not ON_CPU, reason="the YNNPACK option exists on CPU only")
def test_compiled_program_uses_the_options(conv_inputs):
    tuned = jaxnets.jit(conv)
    assert tuned.compiler_options == default_compiler_options() == CPU_COMPILER_OPTIONS
    assert _ynn_fusions(jax.jit(conv), *conv_inputs) > 0  # XLA's default: the convolution runs in YNNPACK
    assert _ynn_fusions(tuned, *conv_inputs) == 0
    # compiler_options given: the user's choice (None: XLA's defaults), passed through to jax.jit.
    plain = jaxnets.jit(conv, compiler_options=None)
    assert plain.compiler_options is None and _ynn_fusions(plain, *conv_inputs) > 0


def test_jax_jit_arguments_pass_through():
    calls = []

    @jaxnets.jit(static_argnames="power")
    def f(x, *, power):
        calls.append(power)  # traced once per static value
        return x ** power

    x = jnp.arange(4.0)
    np.testing.assert_array_equal(f(x, power=2), x ** 2)
    np.testing.assert_array_equal(f(x, power=2), x ** 2)
    np.testing.assert_array_equal(f(x, power=3), x ** 3)
    assert calls == [2, 3] and f.__name__ == "f"
    donated = functools.partial(jaxnets.jit, donate_argnums=0)(lambda x: x + 1)
    y = jnp.ones(3)
    np.testing.assert_array_equal(donated(y), 2.0)
    if not ON_CPU:  # CPU ignores donation; elsewhere the donated buffer is gone
        assert y.is_deleted()
    with pytest.raises(TypeError, match="jit: fun must be a callable .* got int"):
        jaxnets.jit(3)


def test_lower_trace_and_methods():
    f = jaxnets.jit(lambda x: jnp.sin(x) * 2)
    x = jnp.arange(3.0)
    assert "sine" in f.lower(x).as_text() and f.eval_shape(x).shape == (3,)

    class Scale:
        def __init__(self, factor):
            self.factor = factor

        @functools.partial(jaxnets.jit, static_argnums=0)  # as with jax.jit: `self` is static
        def __call__(self, x):
            return x * self.factor

    np.testing.assert_array_equal(Scale(3)(x), x * 3)


def test_inside_other_transformations():
    """Inside jax.jit, lax.scan, vmap and grad it works as jax.jit does (nested: inlined without options)."""
    f = jaxnets.jit(lambda x: jnp.sin(x) * 2)
    x = jnp.arange(3.0)
    np.testing.assert_allclose(jax.jit(lambda x: f(x) + 1)(x), jnp.sin(x) * 2 + 1, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(f)(x), jnp.sin(x) * 2, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(lambda x: f(x).sum())(x), 2 * jnp.cos(x), rtol=1e-6)
    total, _ = jax.lax.scan(lambda c, xi: (c + f(xi), None), 0.0, x)
    np.testing.assert_allclose(total, jnp.sum(jnp.sin(x) * 2), rtol=1e-6)
    # A user error raised while tracing is not swallowed by the nested-jit fallback.
    g = jaxnets.jit(lambda x: jnp.reshape(x, (7,)))
    with pytest.raises(TypeError):
        jax.jit(g)(x)


def test_tta_and_ensemble_predict_compile_with_jaxnets_jit(monkeypatch):
    made = []
    real = evaluation.jit

    def recording(fun, **kwargs):
        made.append(real(fun, **kwargs))
        return made[-1]

    monkeypatch.setattr(evaluation, "jit", recording)
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    w = {"w": np.eye(4, dtype=np.float32)}

    def apply_fn(variables, x, *, train):
        return x @ variables["w"]

    flip = lambda x: x[:, ::-1]  # noqa: E731
    transforms = (lambda x: x, flip)
    first = tta_predict(apply_fn, w, x, transforms=transforms)
    np.testing.assert_allclose(tta_predict(apply_fn, w, x, transforms=transforms), first)
    assert len(made) == 1 and made[0].compiler_options == default_compiler_options()  # compiled once, reused
    ensemble_predict([(apply_fn, w), (apply_fn, w)], x)
    assert len(made) == 2 and made[1]._cache_size() == 1


def test_unknown_compiler_option_falls_back_with_one_warning(monkeypatch):
    """A jaxlib that does not know the CPU option: XLA's defaults, one warning, every compile succeeds."""
    bogus = f"xla_cpu_no_such_option_{uuid.uuid4().hex}"  # a name no earlier probe has seen
    monkeypatch.setattr(jaxnets.compile, "CPU_COMPILER_OPTIONS", {bogus: "true"})
    if not ON_CPU:
        pytest.skip("the option is only set on CPU")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert default_compiler_options() is None
        f = jaxnets.jit(lambda x: x * 2)
        np.testing.assert_array_equal(f(jnp.ones(2)), 2.0)
        assert f.compiler_options is None
        steps = compile_steps("none")
        assert steps.compiler_options is None
        assert default_compiler_options() is None
    messages = [str(w.message) for w in caught if bogus in str(w.message)]
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"default_compiler_options: the installed jaxlib {jax.lib.__version__} refuses the "
                                  f"compiler options {{'{bogus}': 'true'}} (INVALID_ARGUMENT: No such compile option")
    assert "compiling with XLA's default options instead" in messages[0]
    # The real option is still accepted (the cache is per set of options).
    monkeypatch.undo()
    assert default_compiler_options() == CPU_COMPILER_OPTIONS


def test_options_accepted():
    assert jaxnets.compile.options_accepted(CPU_COMPILER_OPTIONS if ON_CPU else {})
    with pytest.warns(UserWarning, match="refuses the compiler options"):
        assert not jaxnets.compile.options_accepted({f"xla_no_such_option_{uuid.uuid4().hex}": "1"})
