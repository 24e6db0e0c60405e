"""Our checkpoint format: one ``torch.save`` file with the config and fp16 weights (half the
size; the model runs in fp32). Loaded with ``weights_only=True``: no code in the file runs."""

from __future__ import annotations

from pathlib import Path

import torch

from .model import ModelConfig, Transducer

SHIPPED = Path(__file__).with_name("checkpoints") / "phone_commands.pt"


def save(model: Transducer, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: v.half() if v.is_floating_point() else v
               for k, v in model.state_dict().items()}
    torch.save({"config": model.cfg.to_dict(), "weights": weights}, path)


def load(path: str | Path = SHIPPED) -> Transducer:
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = Transducer(ModelConfig(**blob["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in blob["weights"].items()})
    return model.eval()
