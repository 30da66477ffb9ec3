"""GPU catalog: vendor datasheet figures, keyed by the system names the measured data uses.

Every figure is per GPU and carries its unit in its name. Tensor-core throughputs are the
*dense* figures (datasheets often headline the 2:4-sparse number, which is twice as large).
A precision a GPU has no tensor cores for is ``None``; :meth:`GPU.tflops` falls back to the
next wider format the hardware runs (fp4 weights on a Hopper GPU compute in fp8).

``interconnect_gbs`` is the vendor's per-GPU scale-up bandwidth, both directions summed
(NVLink 4 on H100: 900 GB/s); a ring all-reduce moves data at about half of it in each
direction. ``nvlink_domain_gpus`` is how many GPUs share that fabric: 8 on an HGX board, 72 in
a GB200/GB300 NVL72 rack; tensor parallelism never spans more. ``price_per_hour_usd`` is an
indicative on-demand cloud price per GPU, meant to be overridden with your own.

Example:
    >>> from tune.catalog.hardware import get_gpu
    >>> gpu = get_gpu("h100_sxm")
    >>> gpu.hbm_bandwidth_gbs, gpu.tflops("fp8")
    (3350.0, 1979.0)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tune.errors import UnknownGPU

__all__ = ["GPU", "GPUS", "get_gpu", "gpu_names"]


class GPU(BaseModel):
    """One accelerator's datasheet figures (all per GPU)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    vendor: str
    description: str
    bf16_dense_tflops: float = Field(gt=0)
    fp8_dense_tflops: float | None = None
    fp4_dense_tflops: float | None = None
    int8_dense_tops: float | None = None
    hbm_bandwidth_gbs: float = Field(gt=0)
    memory_gb: float = Field(gt=0)
    interconnect_gbs: float = Field(gt=0)
    nvlink_domain_gpus: int = Field(ge=1)
    gpus_per_node: int = Field(ge=1)
    price_per_hour_usd: float = Field(ge=0)

    def tflops(self, compute: str) -> float:
        """Dense TFLOP/s for a compute format (``bf16``, ``fp8`` or ``fp4``), falling back
        to the next wider format the GPU supports."""
        if compute == "fp4" and self.fp4_dense_tflops:
            return self.fp4_dense_tflops
        if compute in ("fp4", "fp8") and self.fp8_dense_tflops:
            return self.fp8_dense_tflops
        return self.bf16_dense_tflops

    def with_price(self, price_per_hour_usd: float) -> GPU:
        """A copy of this GPU with another hourly price."""
        return self.model_copy(update={"price_per_hour_usd": price_per_hour_usd})


def _gpu(**kwargs: object) -> GPU:
    return GPU.model_validate(kwargs)


# Sources: NVIDIA H100/H200/HGX B200/HGX B300/GB200 NVL72/GB300 NVL72/A100/L40S/L4 datasheets,
# the AWS G5 (A10G) documentation and the AMD Instinct MI300X datasheet.
GPUS: dict[str, GPU] = {
    gpu.name: gpu
    for gpu in (
        _gpu(name="h100_sxm", vendor="nvidia", description="H100 SXM5 80GB (HGX)",
             bf16_dense_tflops=989.0, fp8_dense_tflops=1979.0, int8_dense_tops=1979.0,
             hbm_bandwidth_gbs=3350.0, memory_gb=80.0, interconnect_gbs=900.0,
             nvlink_domain_gpus=8, gpus_per_node=8, price_per_hour_usd=3.00),
        _gpu(name="h200_sxm", vendor="nvidia", description="H200 SXM 141GB (HGX)",
             bf16_dense_tflops=989.0, fp8_dense_tflops=1979.0, int8_dense_tops=1979.0,
             hbm_bandwidth_gbs=4800.0, memory_gb=141.0, interconnect_gbs=900.0,
             nvlink_domain_gpus=8, gpus_per_node=8, price_per_hour_usd=3.80),
        _gpu(name="b200_sxm", vendor="nvidia", description="B200 180GB (HGX B200)",
             bf16_dense_tflops=2250.0, fp8_dense_tflops=4500.0, fp4_dense_tflops=9000.0,
             int8_dense_tops=4500.0,
             hbm_bandwidth_gbs=8000.0, memory_gb=180.0, interconnect_gbs=1800.0,
             nvlink_domain_gpus=8, gpus_per_node=8, price_per_hour_usd=5.50),
        _gpu(name="b300_sxm", vendor="nvidia", description="B300 Blackwell Ultra 288GB (HGX B300)",
             bf16_dense_tflops=2250.0, fp8_dense_tflops=4500.0, fp4_dense_tflops=13500.0,
             hbm_bandwidth_gbs=8000.0, memory_gb=288.0, interconnect_gbs=1800.0,
             nvlink_domain_gpus=8, gpus_per_node=8, price_per_hour_usd=7.00),
        _gpu(name="gb200", vendor="nvidia", description="GB200 NVL72, per B200 GPU (186GB)",
             bf16_dense_tflops=2500.0, fp8_dense_tflops=5000.0, fp4_dense_tflops=10000.0,
             int8_dense_tops=5000.0,
             hbm_bandwidth_gbs=8000.0, memory_gb=186.0, interconnect_gbs=1800.0,
             nvlink_domain_gpus=72, gpus_per_node=4, price_per_hour_usd=6.50),
        _gpu(name="gb300", vendor="nvidia", description="GB300 NVL72, per B300 GPU (288GB)",
             bf16_dense_tflops=2500.0, fp8_dense_tflops=5000.0, fp4_dense_tflops=15000.0,
             hbm_bandwidth_gbs=8000.0, memory_gb=288.0, interconnect_gbs=1800.0,
             nvlink_domain_gpus=72, gpus_per_node=4, price_per_hour_usd=8.00),
        _gpu(name="a100_sxm_40gb", vendor="nvidia", description="A100 SXM4 40GB",
             bf16_dense_tflops=312.0, int8_dense_tops=624.0,
             hbm_bandwidth_gbs=1555.0, memory_gb=40.0, interconnect_gbs=600.0,
             nvlink_domain_gpus=8, gpus_per_node=8, price_per_hour_usd=1.50),
        _gpu(name="a100_sxm_80gb", vendor="nvidia", description="A100 SXM4 80GB",
             bf16_dense_tflops=312.0, int8_dense_tops=624.0,
             hbm_bandwidth_gbs=2039.0, memory_gb=80.0, interconnect_gbs=600.0,
             nvlink_domain_gpus=8, gpus_per_node=8, price_per_hour_usd=1.90),
        # PCIe cards: no NVLink, so the "interconnect" is PCIe Gen4 x16 (64 GB/s both ways).
        _gpu(name="l40s", vendor="nvidia", description="L40S 48GB (PCIe)",
             bf16_dense_tflops=362.0, fp8_dense_tflops=733.0, int8_dense_tops=733.0,
             hbm_bandwidth_gbs=864.0, memory_gb=48.0, interconnect_gbs=64.0,
             nvlink_domain_gpus=8, gpus_per_node=8, price_per_hour_usd=1.00),
        _gpu(name="l4", vendor="nvidia", description="L4 24GB (PCIe)",
             bf16_dense_tflops=121.0, fp8_dense_tflops=242.0, int8_dense_tops=242.0,
             hbm_bandwidth_gbs=300.0, memory_gb=24.0, interconnect_gbs=64.0,
             nvlink_domain_gpus=8, gpus_per_node=8, price_per_hour_usd=0.45),
        _gpu(name="a10g", vendor="nvidia", description="A10G 24GB (AWS G5, PCIe)",
             bf16_dense_tflops=70.0, int8_dense_tops=140.0,
             hbm_bandwidth_gbs=600.0, memory_gb=24.0, interconnect_gbs=64.0,
             nvlink_domain_gpus=8, gpus_per_node=8, price_per_hour_usd=1.00),
        _gpu(name="mi300x", vendor="amd", description="Instinct MI300X 192GB (OAM)",
             bf16_dense_tflops=1307.0, fp8_dense_tflops=2615.0, int8_dense_tops=2615.0,
             hbm_bandwidth_gbs=5300.0, memory_gb=192.0, interconnect_gbs=896.0,
             nvlink_domain_gpus=8, gpus_per_node=8, price_per_hour_usd=2.50),
        # The stack's CPU runtime (``foundry bench`` records ``system=cpu`` by default), so
        # benchmarks of a local stack train and test the predictor like any GPU's. Indicative
        # figures of one modern server socket: AVX-512/AMX bf16 peak, DDR5 bandwidth.
        _gpu(name="cpu", vendor="generic", description="CPU host (the CPU runtime)",
             bf16_dense_tflops=2.0, hbm_bandwidth_gbs=100.0, memory_gb=64.0,
             interconnect_gbs=50.0, nvlink_domain_gpus=1, gpus_per_node=1,
             price_per_hour_usd=0.20),
    )
}


def gpu_names() -> list[str]:
    """Every GPU system name in the catalog."""
    return sorted(GPUS)


def get_gpu(name: str) -> GPU:
    """The catalog entry for a system name (case-insensitive, ``-`` accepted for ``_``)."""
    key = name.strip().lower().replace("-", "_")
    try:
        return GPUS[key]
    except KeyError:
        raise UnknownGPU(name, known=gpu_names()) from None
