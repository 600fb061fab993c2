"""Reading NVIDIA GPUs: NVML through nvidia-ml-py, else `nvidia-smi`, one sample of the chosen GPUs at a time.

`open_source(ids)` picks the first that works (NVML, then nvidia-smi) and says why when neither
does. A source gives `devices()` once (what the manifest keeps) and `sample()` per tick: one dict
per chosen GPU, each field None where the GPU or its driver does not report it:
  index            the GPU's NVML index (nvidia-smi's numbering is the same)
  power_w          board power draw, W (NVML's power usage: on recent GPUs the driver's 1 s average)
  power_instant_w  the instantaneous draw, W, where the driver has it (NVML field POWER_INSTANT)
  energy_j         energy counter, J, since the driver loaded (NVML only; Volta and newer)
  sm_clock_mhz, mem_clock_mhz      current clocks
  util_gpu_pct, util_mem_pct       utilisation over the driver's last sample period
  mem_used_mib, temp_c
  throttle         bitmask of active clock event reasons (REASONS)
  error            instead of the fields, when the GPU could not be read at all (lost, off the bus)
"""

from __future__ import annotations

import shutil
import subprocess
import time

# Clock event ("throttle") reason bits, as NVML and nvidia-smi define them.
REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
    0x100: "display_clocks",
    0x200: "board_limit",
    0x400: "reliability",
}
# The reasons that hold the clocks below what the load asks for; idle, application clocks, sync
# boost and display clocks describe a setting or no load, not a limit hit.
THROTTLING = 0x4 | 0x8 | 0x20 | 0x40 | 0x80 | 0x200 | 0x400
FIELDS = (
    "power_w",
    "power_instant_w",
    "energy_j",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "util_gpu_pct",
    "util_mem_pct",
    "mem_used_mib",
    "temp_c",
    "throttle",
)


class NoGpu(Exception):
    """No NVIDIA GPU can be read here; the message says why."""


def reason_names(mask: int | None) -> list[str]:
    return [name for bit, name in REASONS.items() if mask and mask & bit]


def _text(v) -> str | None:
    """NVML's strings: str from recent nvidia-ml-py, bytes from older ones, None when unread."""
    return v.decode() if isinstance(v, bytes) else None if v is None else str(v)


def select(count: int, ids: list[int] | None) -> list[int]:
    """The indices to sample: `ids` (each checked) or all `count`."""
    if ids is None:
        return list(range(count))
    bad = [i for i in ids if not 0 <= i < count]
    if bad:
        raise NoGpu(f"no GPU {bad[0]} here ({count} visible: 0-{count - 1})")
    return ids


class Nvml:
    """NVML through nvidia-ml-py (`import pynvml`): a few microseconds per field, no subprocess."""

    name = "nvml"

    def __init__(self, ids: list[int] | None):
        try:
            import pynvml
        except ImportError as e:
            raise NoGpu(f"nvidia-ml-py is not installed ({e})") from None
        self.nv = pynvml
        try:
            pynvml.nvmlInit()
            self.ids = select(pynvml.nvmlDeviceGetCount(), ids)
            self.handles = {i: pynvml.nvmlDeviceGetHandleByIndex(i) for i in self.ids}
        except pynvml.NVMLError as e:
            raise NoGpu(f"NVML: {e}") from None
        self.dead: set[str] = set()  # functions this driver or GPU does not have: not asked again

    def _get(self, what: str, fn, *args):
        """One NVML call; None when the field is not supported (remembered) or fails this once."""
        if what in self.dead:
            return None
        try:
            return fn(*args)
        except self.nv.NVMLError as e:
            if e.value in (self.nv.NVML_ERROR_NOT_SUPPORTED, self.nv.NVML_ERROR_FUNCTION_NOT_FOUND):
                self.dead.add(what)
            elif e.value == self.nv.NVML_ERROR_GPU_IS_LOST:
                raise
            return None

    def devices(self) -> dict:
        nv, out = self.nv, []
        for i, h in self.handles.items():
            limit = self._get(f"limit{i}", nv.nvmlDeviceGetEnforcedPowerLimit, h)
            default = self._get(f"default{i}", nv.nvmlDeviceGetPowerManagementDefaultLimit, h)
            memory = self._get(f"memory{i}", nv.nvmlDeviceGetMemoryInfo, h)
            out.append(
                {
                    "index": i,
                    "name": _text(self._get(f"name{i}", nv.nvmlDeviceGetName, h)),
                    "uuid": _text(self._get(f"uuid{i}", nv.nvmlDeviceGetUUID, h)),
                    "power_limit_w": limit / 1000 if limit is not None else None,
                    "default_power_limit_w": default / 1000 if default is not None else None,
                    "max_sm_clock_mhz": self._get(f"maxsm{i}", nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_SM),
                    "max_mem_clock_mhz": self._get(f"maxmem{i}", nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_MEM),
                    "memory_total_mib": memory.total // 2**20 if memory is not None else None,
                }
            )
        driver = self._get("driver", nv.nvmlSystemGetDriverVersion)
        return {"source": self.name, "driver": _text(driver), "gpus": out}

    def _reasons(self, h):
        # Newer drivers name it "clocks event reasons"; older ones have only the "throttle" name.
        nv = self.nv
        if "events" not in self.dead and hasattr(nv, "nvmlDeviceGetCurrentClocksEventReasons"):
            got = self._get("events", nv.nvmlDeviceGetCurrentClocksEventReasons, h)
            if "events" not in self.dead:
                return got
        return self._get("throttle", nv.nvmlDeviceGetCurrentClocksThrottleReasons, h)

    def _instant(self, h) -> int | None:
        """The instantaneous power field, mW; None where the driver lacks it (then never asked again)."""
        nv = self.nv
        if "instant" in self.dead or not hasattr(nv, "NVML_FI_DEV_POWER_INSTANT"):
            return None
        got = self._get("instant", nv.nvmlDeviceGetFieldValues, h, [nv.NVML_FI_DEV_POWER_INSTANT])
        if got is None:
            return None
        v = got[0]
        if v.nvmlReturn != nv.NVML_SUCCESS:
            if v.nvmlReturn == nv.NVML_ERROR_NOT_SUPPORTED:
                self.dead.add("instant")
            return None
        kinds = {nv.NVML_VALUE_TYPE_DOUBLE: "dVal", nv.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal"}
        return getattr(v.value, kinds.get(v.valueType, "uiVal"))

    def _one(self, i: int, h, counter: bool) -> dict:
        nv, g = self.nv, self._get
        power = g("power", nv.nvmlDeviceGetPowerUsage, h)  # mW
        instant = self._instant(h)  # mW
        # The energy counter costs ~4 ms of CPU a read on an H200 (every other field ~3 us): read it
        # when asked (bench.instrument.energy shares each span between reads by integrated power).
        energy = g("energy", nv.nvmlDeviceGetTotalEnergyConsumption, h) if counter else None  # mJ
        util = g("util", nv.nvmlDeviceGetUtilizationRates, h)
        memory = g("mem", nv.nvmlDeviceGetMemoryInfo, h)
        return {
            "index": i,
            "power_w": power / 1000 if power is not None else None,
            "power_instant_w": instant / 1000 if instant is not None else None,
            "energy_j": energy / 1000 if energy is not None else None,
            "sm_clock_mhz": g("sm", nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
            "mem_clock_mhz": g("memclk", nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_MEM),
            "util_gpu_pct": util.gpu if util is not None else None,
            "util_mem_pct": util.memory if util is not None else None,
            "mem_used_mib": round(memory.used / 2**20) if memory is not None else None,
            "temp_c": g("temp", nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
            "throttle": self._reasons(h),
        }

    def sample(self, counter: bool = True) -> list[dict]:
        """Every GPU's fields now; the energy counter too when `counter`."""
        out = []
        for i, h in self.handles.items():
            try:
                out.append(self._one(i, h, counter))
            except self.nv.NVMLError as e:  # the GPU is lost: say so each tick, keep the others
                out.append({"index": i, "error": str(e)})
        return out

    def close(self) -> None:
        try:
            self.nv.nvmlShutdown()
        except self.nv.NVMLError:
            pass


# nvidia-smi's names for the same fields (no energy counter there); throttle reasons in hex.
SMI_QUERY = [
    ("index", "index"),
    ("power_w", "power.draw"),
    ("sm_clock_mhz", "clocks.sm"),
    ("mem_clock_mhz", "clocks.mem"),
    ("util_gpu_pct", "utilization.gpu"),
    ("util_mem_pct", "utilization.memory"),
    ("mem_used_mib", "memory.used"),
    ("temp_c", "temperature.gpu"),
    ("throttle", "clocks_throttle_reasons.active"),
]
SMI_DEVICES = (
    "index,name,uuid,driver_version,enforced.power.limit,power.default_limit,clocks.max.sm,clocks.max.mem,memory.total"
)


def _number(text: str):
    text = text.strip()
    try:
        return int(text, 16) if text.startswith("0x") else float(text)
    except ValueError:  # "[N/A]", "[Not Supported]", "[GPU is lost]"
        return None


def parse_smi_line(line: str) -> dict | None:
    """One line of `nvidia-smi --query-gpu=<SMI_QUERY> --format=csv,noheader,nounits` as a sample."""
    cells = [c.strip() for c in line.split(",")]
    if len(cells) != len(SMI_QUERY) or not cells[0].isdigit():
        return None
    values = {key: _number(c) for (key, _), c in zip(SMI_QUERY, cells)}
    values["index"] = int(cells[0])
    if all(values[k] is None for k, _ in SMI_QUERY[1:]):
        return {"index": values["index"], "error": ", ".join(cells[1:3])}
    out = {k: values.get(k) for k in FIELDS}
    for k in ("sm_clock_mhz", "mem_clock_mhz", "util_gpu_pct", "util_mem_pct", "mem_used_mib", "temp_c", "throttle"):
        out[k] = int(out[k]) if out[k] is not None else None
    return {"index": values["index"], **out}


def _smi(*args: str, timeout: float = 20) -> str:
    done = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise NoGpu(f"nvidia-smi: {(done.stdout + done.stderr).strip().splitlines()[-1:] or done.returncode}")
    return done.stdout


class Smi:
    """`nvidia-smi --query-gpu ... -lms N`, one long-lived process whose lines are stamped as they arrive."""

    name = "nvidia-smi"

    def __init__(self, ids: list[int] | None):
        if not shutil.which("nvidia-smi"):
            raise NoGpu("no nvidia-smi on PATH")
        try:
            rows = [r for r in _smi("--query-gpu=index", "--format=csv,noheader").splitlines() if r.strip()]
        except (OSError, subprocess.SubprocessError) as e:
            raise NoGpu(f"nvidia-smi: {e}") from None
        self.ids = select(len(rows), ids)
        self.proc: subprocess.Popen | None = None

    def devices(self) -> dict:
        ids = ",".join(map(str, self.ids))
        out = _smi(f"--query-gpu={SMI_DEVICES}", "--format=csv,noheader,nounits", "-i", ids)
        gpus, driver = [], None
        for line in out.splitlines():
            c = [x.strip() for x in line.split(",")]
            if len(c) != 9:
                continue
            driver = c[3]
            gpus.append(
                {
                    "index": int(c[0]),
                    "name": c[1],
                    "uuid": c[2],
                    "power_limit_w": _number(c[4]),
                    "default_power_limit_w": _number(c[5]),
                    "max_sm_clock_mhz": _number(c[6]),
                    "max_mem_clock_mhz": _number(c[7]),
                    "memory_total_mib": _number(c[8]),
                }
            )
        return {"source": self.name, "driver": driver, "gpus": gpus}

    def start(self, interval: float) -> None:
        query = ",".join(q for _, q in SMI_QUERY)
        cmd = ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"]
        cmd += ["-lms", str(max(1, round(interval * 1000))), "-i", ",".join(map(str, self.ids))]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def lines(self):
        """(arrival time, sample) as nvidia-smi prints them; ends when it exits."""
        for line in self.proc.stdout:
            t = time.perf_counter()
            got = parse_smi_line(line)
            if got is not None:
                yield t, got

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def open_source(ids: list[int] | None):
    """NVML when it answers, else nvidia-smi; NoGpu with both reasons when neither does."""
    try:
        return Nvml(ids)
    except NoGpu as nvml:
        try:
            return Smi(ids)
        except NoGpu as smi:
            raise NoGpu(f"{nvml}; {smi}") from None
