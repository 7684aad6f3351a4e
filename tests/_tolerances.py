"""The tolerances of the test suite, named once (``np.testing.assert_allclose(got, want, **FLOAT32)``).

A test uses the tightest one its computation allows; a looser one names the reason in its own name and
comment, so that a test file never carries a private magic number.
"""
# float32 (eps 1.2e-7) against a reference that sums in another order: reductions of up to a few hundred
# terms (convolutions, pooling, normalization statistics, a loss) differ by some tens of ulps.
FLOAT32 = dict(rtol=1e-5, atol=1e-5)

# float32 element-wise formulas and one optimizer update: no long sums, so the absolute floor can be 10x
# tighter (it only has to cover values near zero, where a relative bound means nothing).
FLOAT32_ELEMENTWISE = dict(rtol=1e-5, atol=1e-6)

# Scalar schedule formulas (a learning rate from a step count): a handful of float ops, compared relatively
# only (a rate of exactly 0 must come out as exactly 0).
SCALAR = dict(rtol=1e-6, atol=0)

# float32 through a whole network (ResNet-18 is about 20 convolutions deep): each layer's summation-order
# differences are amplified by the next layers, so a single layer's FLOAT32 would be too tight.
FLOAT32_DEEP_NETWORK = dict(rtol=1e-4, atol=1e-4)

# float64 (eps 2.2e-16, with `jax_enable_x64`) against a float64 reference: the same reductions as FLOAT32
# leave about 1e-14 relative; 1e-10 keeps four orders of magnitude of margin.
FLOAT64 = dict(rtol=1e-10, atol=1e-12)
