"""Environment report and plotting helpers."""

import pytest

from ftlab import envcheck, plots


def test_requirements_parse_and_all_installed():
    packages = dict(envcheck.required_packages())
    assert packages["torch"] == "2.13.0" and packages["trl"] == "1.16.0"
    failures = [c.line() for c in envcheck.check_all() if not c.ok]
    assert failures == []


def test_environment_markers_and_import_names(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text('a==1.0  # note\nb==2.0; python_version < "3.0"\nc==3.0; python_version >= "3.0"\n')
    assert envcheck.required_packages(requirements) == [("a", "1.0"), ("c", "3.0")]
    assert envcheck.check_package("pytest-xdist", None).ok  # imported as xdist


def test_version_mismatch_is_reported():
    check = envcheck.check_package("pytest", "0.0.1")
    assert not check.ok and "pinned" in check.detail
    assert not envcheck.check_package("no-such-package-xyz", None).ok


def test_loss_curves_accepts_all_run_shapes():
    fig = plots.loss_curves(
        {"a": [(1, 3.0), (2, 2.0)], "b": {"step": [1, 2], "loss": [3.5, 2.5]},
         "c": [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 1.0}]},
        validation={"a": [(2, 2.2)]},
    )
    ax = fig.axes[0]
    assert len(ax.lines) == 4 and ax.get_xlabel() and ax.get_ylabel() and ax.get_title()


def test_memory_bars_totals_and_unit_check():
    fig = plots.memory_bars({"full": {"weights": 2 * plots.GIB, "grads": 2 * plots.GIB},
                             "lora": {"weights": 2 * plots.GIB}})
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["4.00", "2.00"]
    with pytest.raises(ValueError, match="unit"):
        plots.memory_bars({"x": {"w": 1}}, unit="GB")


def test_before_after_table():
    table = plots.before_after_table({"acc": 0.1, "tone": 0.2}, {"acc": 0.7, "tone": 0.6})
    assert table.loc["acc", "change"] == pytest.approx(0.6)
    with pytest.raises(KeyError, match="tone"):
        plots.before_after_table({"tone": 0.1}, {"acc": 0.2})


CPUINFO_BF16 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8
"""
CPUINFO_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse sse2 avx avx2 fma
"""
CPUINFO_ARM = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics bf16
"""


def test_cpu_features_from_cpuinfo_text():
    assert envcheck.cpu_features(CPUINFO_BF16) == {
        "avx2": True, "avx512f": True, "avx512_bf16": True, "amx": True, "x86": True}
    assert envcheck.cpu_features(CPUINFO_AVX2) == {
        "avx2": True, "avx512f": False, "avx512_bf16": False, "amx": False, "x86": True}
    assert envcheck.cpu_features(CPUINFO_ARM)["x86"] is False
    assert set(envcheck.cpu_features("processor: 0\n").values()) == {None}  # no flags line: unknown
    assert set(envcheck.cpu_features()) == set(envcheck.CPU_FEATURES) | {"x86"}  # this machine, any CPU


def test_cpu_report_says_what_the_flags_mean():
    with_bf16 = envcheck.cpu_report(envcheck.cpu_features(CPUINFO_BF16), True)
    assert with_bf16.startswith("AVX2 yes, AVX-512 yes, AVX-512 BF16 yes, AMX yes")
    assert "fused 4-bit CPU kernel" in with_bf16 and "turns it off" in with_bf16
    assert "bitsandbytes detects AVX-512 BF16" in with_bf16 and "emulated" not in with_bf16

    without = envcheck.cpu_report(envcheck.cpu_features(CPUINFO_AVX2), False)
    assert without.startswith("AVX2 yes, AVX-512 no, AVX-512 BF16 no, AMX no")
    assert "bf16 matmuls are emulated (slow): the CPU profile computes in fp32" in without
    assert "does not detect" in without and "fused" not in without

    assert "not an x86 CPU" in envcheck.cpu_report(envcheck.cpu_features(CPUINFO_ARM), ask_bitsandbytes=False)
    unknown = envcheck.cpu_report(envcheck.cpu_features("processor: 0\n"), ask_bitsandbytes=False)
    assert "AVX-512 BF16 ?" in unknown and "unknown" in unknown and "not asked" in unknown


def test_main_prints_the_cpu_line_next_to_the_gpu_line(monkeypatch, capsys):
    monkeypatch.setattr(envcheck, "check_all", lambda: [])
    monkeypatch.setattr(envcheck, "cpu_report", lambda: "CPU-REPORT")
    assert envcheck.main() == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("GPU: ") and lines[1] == "CPU: CPU-REPORT" and lines[2].startswith("Hub: ")
