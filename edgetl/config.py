"""The stage configs: one frozen dataclass per command, and the str Enums of their choices.

    FinetuneConfig(data="photos/", strategy="full")      # strings become Enums; bad ones: one clear line
    ExportConfig(int8=True, preset="arm64")
    BenchConfig(target="rpi5", data="photos/val")
    field_defaults(FinetuneConfig).epochs                  # the CLI's defaults come from here: one definition

The CLI, a ``--config FILE`` and the Python API all fill the same classes (``_config.from_dict``);
``to_dict`` writes each beside its artifact (run.json, export.json, bench.json) so any result can
be reproduced from its folder. Nothing heavy is imported here: ``edgetl --help`` and the device
install read these without torch.
"""
from __future__ import annotations

import dataclasses
import enum
import types
from pathlib import Path

from ._config import coerce_enums
from .errors import ConfigError
from .runtime.preprocess import Preprocess, require_opencv
from .targets import get_target, parse_frame_size


def field_defaults(cls) -> types.SimpleNamespace:
    """The defaults of a config dataclass's fields, as attributes (fields without one are left out)."""
    return types.SimpleNamespace(**{f.name: f.default for f in dataclasses.fields(cls)
                                    if f.default is not dataclasses.MISSING})


def choices(enum_cls: type[enum.Enum]) -> list[str]:
    return [m.value for m in enum_cls]


# --- fine-tune ----------------------------------------------------------------------------------

class Strategy(str, enum.Enum):
    linear = "linear"
    full = "full"
    gradual = "gradual"


class Augment(str, enum.Enum):
    none = "none"
    light = "light"
    strong = "strong"


class Schedule(str, enum.Enum):
    cosine = "cosine"
    constant = "constant"


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Resampler(str, enum.Enum):
    """How images are resized, in training and on the device alike (``Preprocess.resampler``)."""

    pillow = "pillow"
    opencv = "opencv"


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Everything that defines a fine-tuning run; written to ``run.json``."""

    data: Path
    backbone: str = "efficientnet_lite0"
    weights: str = "default"  # default | none | path to a checkpoint
    strategy: Strategy = Strategy.linear
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr_mult: float = 0.1
    schedule: Schedule = Schedule.cosine
    warmup_epochs: float = 1.0
    augment: Augment = Augment.none
    cache_views: int = 1
    lp_epochs: int | None = None  # full/gradual: head epochs on cached features first (LP-FT); None = 10
    label_smoothing: float = 0.0
    l2sp: float = 0.0
    weight_decay: float = 1e-4
    head_dropout: float = 0.2
    early_stop: int = 0  # patience in epochs; 0 = off
    seed: int = 0
    device: Device = Device.auto
    val_fraction: float = 0.2
    workers: int = 2
    image_size: int | None = None  # override the backbone's input size (keeps its resize/crop ratio)
    resampler: Resampler = Resampler.pillow  # opencv: ~10x cheaper resize on the device, trained on the same
    image_cache: bool = True
    out: Path | None = None

    def __post_init__(self):
        coerce_enums(self, {"strategy": Strategy, "augment": Augment, "schedule": Schedule, "device": Device,
                            "resampler": Resampler})
        # absolute: export and bench reopen these from run.json, maybe from another working directory
        object.__setattr__(self, "data", Path(self.data).expanduser().absolute())
        if self.out is not None:
            object.__setattr__(self, "out", Path(self.out).expanduser().absolute())
        checks = [(self.epochs >= 1, "--epochs must be at least 1"),
                  (self.batch_size >= 1, "--batch-size must be at least 1"),
                  (self.lr > 0, "--lr must be positive"),
                  (0 <= self.backbone_lr_mult <= 10, "--backbone-lr-mult must be in [0, 10]"),
                  (0 <= self.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
                  (self.l2sp >= 0, "--l2sp must be >= 0"),
                  (self.early_stop >= 0, "--early-stop must be >= 0"),
                  (1 <= self.cache_views <= 64, "--cache-views must be in [1, 64]"),
                  (self.lp_epochs is None or 0 <= self.lp_epochs <= 1000, "--lp-epochs must be in [0, 1000]"),
                  (0 <= self.head_dropout < 1, "head dropout must be in [0, 1)"),
                  (self.workers >= 0, "--workers must be >= 0"),
                  (self.image_size is None or 16 <= self.image_size <= 1024, "--image-size must be in [16, 1024]")]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        if self.l2sp > 0 and self.strategy == Strategy.linear:
            raise ConfigError("--l2sp regularises backbone weights, but --strategy linear freezes them: "
                              "use --strategy full or gradual, or drop --l2sp")
        if self.lp_epochs and self.strategy == Strategy.linear:
            raise ConfigError("--lp-epochs warms the head up before --strategy full or gradual; "
                              "--strategy linear is a linear probe already: drop --lp-epochs")
        if self.cache_views > 1 and (self.strategy != Strategy.linear or self.augment == Augment.none):
            raise ConfigError("--cache-views K caches K augmented views for --strategy linear: "
                              "it needs --augment light or strong and --strategy linear")

    def head_warmup_epochs(self) -> int:
        """Linear-probe epochs before full/gradual fine-tuning (0 for linear, or when turned off)."""
        if self.strategy == Strategy.linear:
            return 0
        return 10 if self.lp_epochs is None else self.lp_epochs

    def preprocess(self) -> Preprocess:
        """The backbone's preprocessing, at ``image_size`` when one is given."""
        from . import zoo  # (here, not at the top: the zoo reads torchvision, which a device lacks)

        pp = zoo.get_spec(self.backbone).preprocess
        if self.image_size and self.image_size != pp.crop:
            pp = dataclasses.replace(pp, crop=self.image_size, resize=round(self.image_size * pp.resize / pp.crop))
        if self.resampler != Resampler.pillow:
            require_opencv()
            pp = dataclasses.replace(pp, resampler=self.resampler.value)
        return pp

    def default_out(self) -> Path:
        from . import zoo

        data_name = self.data.resolve().name or "data"
        return Path("models").absolute() / f"{zoo.safe_name(self.backbone)}-{data_name}-{self.strategy.value}"




# --- export and int8 ----------------------------------------------------------------------------

class CalibMethod(str, enum.Enum):
    auto = "auto"  # minmax first; percentile and more images when the agreement target is missed
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


class Preset(str, enum.Enum):
    auto = "auto"
    x86_avx2 = "x86-avx2"
    x86_vnni = "x86-vnni"
    arm64 = "arm64"
    tensorrt = "tensorrt"


# options that only mean something with --int8: setting one without it is an error
_INT8_ONLY = ("calib_data", "eval_data", "preset", "calib_method", "calib_size", "max_drop", "per_channel",
              "min_agreement", "qat", "qat_epochs", "qat_lr", "qat_batch_size", "qat_images", "qat_device")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Options of ``edgetl export``; written to ``export.json`` in the bundle."""

    out: Path | None = None  # default: RUN/bundle
    opset: int = 17
    embed_preprocess: bool = False
    simplify: bool = True
    parity_images: int = 64
    tolerance: float = 1e-4  # max |logit diff| <= tolerance * max(1, max |logit|)
    int8: bool = False
    fp16: bool = False  # model.fp16.onnx beside fp32 (float16 weights and compute, float32 input/output)
    calib_data: Path | None = None
    calib_size: int = 200
    calib_method: CalibMethod = CalibMethod.auto
    preset: Preset = Preset.auto
    per_channel: bool = True
    max_drop: float = 0.5  # top-1 points int8 may lose against fp32
    min_agreement: float = 0.99  # share of images where int8's top-1 should equal fp32's (a target, not a gate)
    eval_data: Path | None = None
    eval_size: int = 300
    qat: bool = False  # quantization-aware training when PTQ misses min_agreement
    qat_epochs: int = 3
    qat_lr: float = 1e-5
    qat_batch_size: int = 16
    qat_images: int = 2000  # train images QAT sees (class-stratified)
    qat_device: Device = Device.auto
    seed: int = 0

    def __post_init__(self):
        coerce_enums(self, {"calib_method": CalibMethod, "preset": Preset, "qat_device": Device})
        for name in ("out", "calib_data", "eval_data"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)).expanduser().absolute())
        if not 17 <= self.opset <= 23:
            raise ConfigError(f"--opset {self.opset} is not supported: use 17..23")
        if self.tolerance <= 0:
            raise ConfigError("parity tolerance must be positive")
        if not self.int8:
            defaults = vars(field_defaults(ExportConfig))
            set_int8 = [n for n in _INT8_ONLY if getattr(self, n) != defaults[n]]
            if set_int8:
                raise ConfigError(f"--{set_int8[0].replace('_', '-')} only applies to int8: add --int8")
        if not 1 <= self.calib_size <= 100_000:
            raise ConfigError("--calib-size must be in 1..100000")
        if not 0 <= self.max_drop <= 100:
            raise ConfigError("--max-drop is in top-1 points, 0..100")
        if not 0 <= self.min_agreement <= 1:
            raise ConfigError("--min-agreement is a share of images, 0..1 (e.g. 0.99)")
        if self.preset == Preset.tensorrt and not self.per_channel:
            raise ConfigError("the tensorrt preset needs per-channel weights (TensorRT's int8 convolutions): "
                              "drop --per-tensor")
        if not 1 <= self.qat_epochs <= 100 or self.qat_lr <= 0 or self.qat_batch_size < 1 or self.qat_images < 1:
            raise ConfigError("--qat-epochs must be in 1..100, --qat-lr positive, batch size and images >= 1")

    @property
    def calib_draw(self) -> int:
        """Calibration images drawn from the train split: the auto search also tries all of them, so it
        gathers 2.5x --calib-size (the first candidates calibrate on the first --calib-size)."""
        return self.calib_size if self.calib_method != CalibMethod.auto else round(2.5 * self.calib_size)


# --- bench --------------------------------------------------------------------------------------

class Scenario(str, enum.Enum):
    single_stream = "single-stream"
    multi_stream = "multi-stream"  # the target's streams batched into one call per tick
    camera_rig = "camera-rig"  # the target's streams as concurrent cameras at its FPS, each with the deadline
    offline = "offline"


class FrameSource(str, enum.Enum):
    raw = "raw"  # decoded frames (a CSI / GMSL camera, or a driver that decodes)
    mjpeg = "mjpeg"  # the camera's JPEG bytes, decoded by the worker (a USB camera's MJPEG stream)


class Trigger(str, enum.Enum):
    synced = "synced"  # every camera captures at the same instants (hardware sync: the worst case)
    staggered = "staggered"  # phases spread over the frame period (free-running cameras)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Options of ``edgetl bench``; written to ``bench.json``."""

    target: str = "host"  # a profile name (edgetl targets) or a target JSON file
    data: Path | None = None
    scenario: Scenario | None = None  # default: camera-rig when the target has >1 stream, else single-stream
    threads: int | None = None  # default: the target's, capped at this host's cores
    providers: tuple[str, ...] | None = None  # default: the target's
    min_runs: int = 50
    min_time: float = 2.0
    warmup: int = 10
    max_images: int | None = None  # None: every image of --data (capped: a stratified sample)
    out: Path | None = None
    rss: bool = True
    torch_reference: bool = True
    end_to_end: bool = True  # also time encoded image bytes -> label (decode, resize, crop, normalize, run, top-k)
    streams: int | None = None  # default: the target's
    streams_max: bool = False  # camera-rig: search the most streams that PASS (--streams max)
    rig_seconds: float = 10.0  # camera-rig: how long the streams run, per variant and repeat
    repeats: int = 3  # camera-rig: full runs; the verdict is the worst one's
    frame_size: str | None = None  # WIDTHxHEIGHT of the camera frames (default: the target's resolution, else
    #                                the photos as stored / 640x480 synthetic frames)
    frames: FrameSource = FrameSource.raw
    trigger: Trigger = Trigger.synced
    fast_decode: bool = False  # JPEG decoded at a reduced DCT scale (opt-in: not the training tensor)
    duration: float | None = None  # a sustained run of this many seconds (p50 per interval, drift, CPU clock/temp)

    def __post_init__(self):
        coerce_enums(self, {"scenario": Scenario, "frames": FrameSource, "trigger": Trigger})
        if self.frame_size is not None:
            parse_frame_size(self.frame_size)
        if not 1 <= self.repeats <= 100:
            raise ConfigError(f"--repeats {self.repeats}: use 1..100 full runs of the camera rig")
        if self.streams_max and self.scenario not in (None, Scenario.camera_rig):
            raise ConfigError(f"--streams max searches the camera rig: drop --scenario {self.scenario.value} "
                              f"(or use --scenario camera-rig)")
        if self.min_runs < 1 or self.min_time < 0 or self.warmup < 0:
            raise ConfigError("--min-runs must be >= 1, --min-time and warm-up >= 0")
        if self.streams is not None and not 1 <= self.streams <= 64:
            raise ConfigError(f"--streams {self.streams}: use 1..64 camera streams")
        if not 0 < self.rig_seconds <= 86400:
            raise ConfigError(f"--rig-seconds {self.rig_seconds}: use a positive number of seconds")
        if self.duration is not None and not 0 < self.duration <= 7 * 86400:
            raise ConfigError(f"--duration {self.duration}: use a positive number of seconds (e.g. 600)")
        for name in ("data", "out"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)).expanduser().absolute())
        if str(self.target).endswith(".json"):  # a target file: ~ expanded, absolute (bench --on sends it)
            object.__setattr__(self, "target", str(Path(self.target).expanduser().absolute()))
        get_target(self.target)  # unknown target -> clear error now
