"""Run under torchrun (1 or 2 ranks): load a saved model folder the way every run does
(build_classifier under ZeRO-3) and report, per rank, the parameter elements it holds and its
peak memory while loading.

Memory is read from /proc/self/status: VmHWM (the kernel's exact peak resident set, reset before
the load through /proc/self/clear_refs) and RssAnon sampled every 0.5 ms (anonymous memory: what
the process allocated itself, excluding pages of memory-mapped files such as the safetensors
checkpoint, which the page cache shares between processes)."""
import gc
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from w2s_scale import distributed as dist  # noqa: E402
from w2s_scale.config import ModelConfig, TrainConfig  # noqa: E402
from w2s_scale.ds_config import build  # noqa: E402
from w2s_scale.models import build_classifier, load_hf_config  # noqa: E402


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class PeakSampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = status_kb("RssAnon"), True

    def run(self):
        while self.running:
            self.peak = max(self.peak, status_kb("RssAnon"))
            time.sleep(0.0005)

    def stop(self) -> int:
        self.running = False
        self.join()
        return max(self.peak, status_kb("RssAnon"))


model_dir, out_path = sys.argv[1], sys.argv[2]
sys.setswitchinterval(0.0002)  # let the sampler run often while the loader holds the GIL
dist.init()
cfg = ModelConfig(name=model_dir)
load_hf_config(cfg)  # imports the architecture's modules before the baseline is taken
import transformers.models.llama.modeling_llama  # noqa: E402,F401

ds = build(TrainConfig(zero_stage=3, batch_size=2, micro_batch_size=1), "fp32", dist.world_size())
gc.collect()
dist.barrier()
base_anon = status_kb("RssAnon")
Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
base_rss = status_kb("VmRSS")
sampler = PeakSampler()
sampler.start()
t0 = time.perf_counter()
model = build_classifier(cfg, ds)
seconds = time.perf_counter() - t0
peak_anon = sampler.stop()
peak_rss = status_kb("VmHWM")
params = list(model.parameters())
report = {
    "rank": dist.rank(), "world_size": dist.world_size(), "load_seconds": round(seconds, 2),
    "partitioned": all(hasattr(p, "ds_id") for p in params),
    "full_elements": sum(p.ds_numel for p in params),
    "local_elements": sum(p.ds_tensor.numel() for p in params),
    # what the parameters' own tensors hold on this rank (0 elements outside a gather)
    "param_data_elements": sum(p.data.numel() for p in params),
    "anon_peak_delta_mb": (peak_anon - base_anon) / 1024,
    "anon_after_delta_mb": (status_kb("RssAnon") - base_anon) / 1024,
    "rss_peak_delta_mb": (peak_rss - base_rss) / 1024,
}
gathered = dist.all_gather_objects(report)
if dist.is_main():
    Path(out_path).write_text(json.dumps(gathered, indent=1))
dist.finish()
