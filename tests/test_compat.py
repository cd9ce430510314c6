"""The compat modules: the installed libraries pass their self-tests, and the checks fail closed."""
import pytest

from common.versions import check_version, version_tuple
from pipeline.compat import diffusers as diffusers_compat
from transports.compat import aioice as aioice_compat
from transports.compat import aiortc as aiortc_compat


def test_installed_versions_pass():
    for mod in (diffusers_compat, aiortc_compat, aioice_compat):
        mod.self_test()


def test_versions_outside_the_checked_range_are_refused():
    assert version_tuple("0.42.1.dev0") == (0, 42, 1) and version_tuple("1.16.0") == (1, 16, 0)
    check_version("x", "1.16.0", "1.10", "1.17")
    with pytest.raises(RuntimeError, match="x 1.17.0 is not supported"):
        check_version("x", "1.17.0", "1.10", "1.17")
    with pytest.raises(RuntimeError, match="checked for >=1.10,<1.17"):
        check_version("x", "1.9.9", "1.10", "1.17")


def test_a_missing_private_api_fails_closed(monkeypatch):
    from aiortc import RTCRtpSender

    monkeypatch.delattr(RTCRtpSender, "_send_keyframe")
    with pytest.raises(RuntimeError, match="_send_keyframe"):
        aiortc_compat.self_test()


def test_restricted_host_addresses_are_what_ice_gathers():
    import aioice.ice

    aioice_compat.restrict_host_addresses(["127.0.0.1", "::1"])
    try:
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]
    finally:
        aioice_compat.restrict_host_addresses(None)
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(True, False)  # aioice's own choice again
