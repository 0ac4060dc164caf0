"""``kernels.cache.prefer_wide_vectors``: on an AVX-512 host, kernels are compiled for
512-bit vectors (``NUMBA_CPU_FEATURES`` without ``prefer-256-bit``, which compile
workers inherit and the cache key includes); a user's own ``NUMBA_CPU_FEATURES`` or
``GCOMPILE_VECTOR_WIDTH=256`` leave LLVM's choice; a host without AVX-512 is untouched."""
import llvmlite.binding as ll
import pytest

from kernels import cache


class _Features(dict):
    def flatten(self) -> str:
        return ",".join(("+" if on else "-") + k for k, on in self.items())


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv("NUMBA_CPU_FEATURES", raising=False)
    monkeypatch.delenv("GCOMPILE_VECTOR_WIDTH", raising=False)
    return monkeypatch


def _host(monkeypatch, avx512: bool) -> None:
    feats = _Features(avx2=True, avx512f=avx512)
    monkeypatch.setattr(ll, "get_host_cpu_features", lambda: feats)


def test_avx512_host_gets_512_bit_vectors(env):
    import os
    _host(env, True)
    assert cache.prefer_wide_vectors()
    assert os.environ["NUMBA_CPU_FEATURES"] == "+avx2,+avx512f,-prefer-256-bit"
    assert cache.prefer_wide_vectors()  # idempotent: recognises its own setting


@pytest.mark.parametrize("case", ["no_avx512", "width_256", "user_features"])
def test_left_alone(env, case):
    import os
    _host(env, case != "no_avx512")
    if case == "width_256":
        env.setenv("GCOMPILE_VECTOR_WIDTH", "256")
    if case == "user_features":
        env.setenv("NUMBA_CPU_FEATURES", "+avx2")
    assert not cache.prefer_wide_vectors()
    assert os.environ.get("NUMBA_CPU_FEATURES") == ("+avx2" if case == "user_features" else None)


def test_the_setting_is_part_of_the_cache_key(env):
    _host(env, True)
    before = cache._host_cpu()
    cache.prefer_wide_vectors()
    assert cache._host_cpu() != before
