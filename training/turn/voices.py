"""The TTS voices training speech is made with: many engines, accents and speakers, all offline.

A model trained on one voice learns that voice's prosody, not the end of a turn, so the
registry spans every engine installed here (training/turn/setup.sh installs them): Piper joe,
hibari, flite, festival and espeak-ng. Each :class:`Voice` speaks ``text`` at a speaking
``rate`` (1 = the voice's own pace) and ``pitch`` (a frequency factor, 1 = its own) and returns
float32 mono audio at 16 kHz. espeak-ng moves its pitch natively; the other engines are
resampled (which moves formants too: a slightly different vocal tract, i.e. another speaker),
asking the engine for a compensating rate so that the duration still follows ``rate``.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from voiceagent.audio import resample

RATE = 16_000
Engine = Callable[[str, float], tuple[np.ndarray, int]]  # (text, rate) -> (audio, sample rate)


@dataclass(frozen=True)
class Voice:
    name: str
    family: str
    speak: Callable[..., np.ndarray]  # (text, rate=1.0, pitch=1.0) -> float32 16 kHz

    def __call__(self, text: str, rate: float = 1.0, pitch: float = 1.0) -> np.ndarray:
        return self.speak(text, rate, pitch)


def _resampled(engine: Engine) -> Callable[[str, float, float], np.ndarray]:
    """Pitch by resampling: audio made at ``rate / pitch`` and played ``pitch`` times faster."""
    def speak(text: str, rate: float = 1.0, pitch: float = 1.0) -> np.ndarray:
        audio, sr = engine(text, rate / pitch)
        return resample(np.asarray(audio, dtype=np.float32), round(sr * pitch), RATE)
    return speak


def _run_wav(cmd: list[str], text: str | None = None) -> tuple[np.ndarray, int]:
    """Run a command that writes a WAV to the path given as ``{wav}``."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = str(Path(tmp) / "out.wav")
        done = subprocess.run([wav if c == "{wav}" else c for c in cmd], input=text, text=True,
                              check=True, capture_output=True, timeout=60)
        if not Path(wav).exists():  # festival reports a Scheme error with exit status 0
            raise subprocess.SubprocessError(f"{cmd[0]} wrote no audio: {done.stderr[-200:]}")
        audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    return audio.mean(axis=1), sr


# --- Piper (joe, the project's own voice), with its sampling noise varied ---------------------

@functools.cache
def _piper():
    from piper import PiperVoice

    from voiceagent_plugins.piper_tts import bundled_model_path
    return PiperVoice.load(bundled_model_path())


def _piper_engine(noise: float, noise_w: float) -> Engine:
    def engine(text: str, rate: float) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        voice = _piper()
        config = SynthesisConfig(length_scale=1.0 / rate, noise_scale=noise,
                                 noise_w_scale=noise_w)
        audio = np.concatenate([c.audio_float_array
                                for c in voice.synthesize(text, syn_config=config)])
        return audio, voice.config.sample_rate
    return engine


# --- hibari (a Kokoro voice distilled to 8 MB; only "heart" ships in the wheel) ---------------

@functools.cache
def _hibari():
    from hibari import Hibari
    return Hibari(threads=1)


def _hibari_engine(text: str, rate: float) -> tuple[np.ndarray, int]:
    return _hibari()(text, speed=float(np.clip(rate, 0.5, 2.0)), seed=0), 24_000


# --- flite, festival and espeak-ng, driven through their command lines ------------------------

def _flite_engine(voice: str) -> Engine:
    def engine(text: str, rate: float) -> tuple[np.ndarray, int]:
        return _run_wav(["flite", "-voice", voice, "--setf", f"duration_stretch={1 / rate:.3f}",
                         "-t", text, "-o", "{wav}"])
    return engine


def _festival_engine(voice: str) -> Engine:
    def engine(text: str, rate: float) -> tuple[np.ndarray, int]:
        # diphone voices stretch durations; HTS voices ignore that and take hts_engine's speed
        speed = (f"(set! hts_engine_params (cons (list \"-r\" {rate:.3f}) hts_engine_params))"
                 if "hts" in voice else f"(Parameter.set 'Duration_Stretch {1 / rate:.3f})")
        setup = f"(begin (voice_{voice}) {speed})"
        return _run_wav(["text2wave", "-eval", setup, "-o", "{wav}"], text)
    return engine


def _espeak(voice: str, wpm: int) -> Callable[[str, float, float], np.ndarray]:
    def speak(text: str, rate: float = 1.0, pitch: float = 1.0) -> np.ndarray:
        level = int(np.clip(50 + 150 * (pitch - 1.0), 0, 99))  # 0-99, 50 is the voice's own
        audio, sr = _run_wav(["espeak-ng", "-v", voice, "-s", str(round(wpm * rate)),
                              "-p", str(level), "-w", "{wav}", text])
        return resample(audio, sr, RATE)
    return speak


ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
                  "en-gb-x-gbcwmd", "en-us-nyc")
# the human-sounding variants (espeak-ng --voices=variant); the robots and whisper are left out
ESPEAK_VARIANTS = ("", "m1", "m2", "m3", "m5", "m7", "f1", "f2", "f3", "f4", "f5", "Andy",
                   "Annie", "Alex", "Denis", "Gene", "Jacky", "Lee", "linda", "max", "Michael",
                   "paul", "rob", "steph", "Storm", "anika", "aunty", "belinda", "david",
                   "edward", "grandma", "grandpa", "john", "norbert", "quincy", "shelby",
                   "travis", "victor", "zac")
FLITE_VOICES = ("kal16", "awb", "rms", "slt", "kal")
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
PIPER_NOISE = {"joe": (0.667, 0.8), "joe-flat": (0.33, 0.4), "joe-lively": (0.9, 1.1)}


def registry() -> list[Voice]:
    """Every voice, engines that are not installed included (:func:`available` checks)."""
    voices = [Voice(f"piper-{name}", "piper", _resampled(_piper_engine(*noise)))
              for name, noise in PIPER_NOISE.items()]
    voices.append(Voice("hibari-heart", "hibari", _resampled(_hibari_engine)))
    voices += [Voice(f"flite-{v}", "flite", _resampled(_flite_engine(v))) for v in FLITE_VOICES]
    voices += [Voice(f"festival-{v}", "festival", _resampled(_festival_engine(v)))
               for v in FESTIVAL_VOICES]
    voices += [Voice(f"espeak-{a}{'+' + v if v else ''}", "espeak",
                     _espeak(f"{a}+{v}" if v else a, 165))
               for a in ESPEAK_ACCENTS for v in ESPEAK_VARIANTS]
    return voices


def available(voices: list[Voice]) -> list[Voice]:
    """The voices that speak here (a missing engine raises; it is left out, not fatal)."""
    working = []
    for voice in voices:
        try:
            ok = len(voice("Okay.")) > RATE // 10
        except (ImportError, OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            working.append(voice)
    return working
