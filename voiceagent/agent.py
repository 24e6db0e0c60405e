"""The developer-facing agent: instructions, tools, backends and turn-taking options."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from .tools import FunctionTool, as_tool

if TYPE_CHECKING:
    from .observer import SessionObserver


class EndpointingOptions(BaseModel):
    """When the user's turn is over. Every duration is in seconds of the session clock.

    ``vad`` mode waits a fixed ``silence_timeout`` after speech. ``hybrid`` mode adapts the
    wait to how finished the turn looks: an audio end-of-turn model (Smart Turn) and a
    completeness score of the transcript combine into one score; a high score ends the turn
    after ``complete_silence``, a low one waits up to ``incomplete_silence``. The
    transcript's score is the recogniser's own probability that a sentence ends there
    (Whisper hears the words and the intonation), or the local LLM's for a recogniser that
    has none. ``model`` mode asks the learned end-of-turn model (voiceagent/turn_model.py,
    trained on synthetic speech only) at every 20 ms of the pause whether the turn is over,
    from the same scores, the transcript's last word and the silence so far; any pause ends
    at ``incomplete_silence``. ``max_turn`` bounds a turn whatever the signals say, so noise or
    hold music cannot stall a session. Defaults come from a grid search with
    benchmarks/turn_taking.py over the shared clips: the lowest false cut-off rate, then the
    shortest delay (docs/benchmarks.md has the curve).
    """

    mode: Literal["vad", "hybrid", "model"] = "hybrid"
    #: VAD speech probability above which a window counts as speech
    activation_threshold: float = Field(0.5, ge=0.0, le=1.0)
    #: speech shorter than this is ignored as a click or a cough
    min_speech: float = Field(0.1, ge=0.0)
    #: silence that ends a speech segment (the VAD's hangover). The hybrid endpointer's models
    #: start at this moment, so it sets how soon they can answer. Two Silero windows: one
    #: gave more cut-offs (Whisper scores 32 ms of trailing audio less reliably), 0.1 s
    #: answers 64 ms later (docs/benchmarks.md)
    min_silence: float = Field(0.064, ge=0.0)
    #: audio kept from before the detected start, so the first syllable is not clipped
    pre_roll: float = Field(0.3, ge=0.0)
    #: vad mode: silence after the end of speech before the turn is over. Measured on the
    #: shared clips: in-sentence pauses reach 0.58 s ("one ... two ... three") and JFK's
    #: rhetorical pauses 1 s; 0.7 s keeps the former whole and splits the latter.
    silence_timeout: float = Field(0.7, ge=0.0)
    #: hybrid: silence needed when the turn looks complete
    complete_silence: float = Field(0.2, ge=0.0)
    #: hybrid: silence needed when it looks unfinished ("a table for... uh"), or while the
    #: scores are not known yet
    incomplete_silence: float = Field(2.0, ge=0.0)
    #: hybrid: scores at or above this count as complete, at or below the next as unfinished;
    #: the wait is interpolated between them
    complete_score: float = Field(0.95, ge=0.0, le=1.0)
    incomplete_score: float = Field(0.94, ge=0.0, le=1.0)
    #: hybrid: the transcript's completeness score: ``stt``, the recogniser's end-of-sentence
    #: probability when it gives one (else the completeness model); ``completeness``, always
    #: the completeness model (the local LLM's probability of ". ? !" after the words)
    text_signal: Literal["stt", "completeness"] = "stt"
    #: hybrid: weight of the audio model against the text score. Whisper's end probability
    #: separates complete from cut sentences far better than Smart Turn on the shared clips
    #: (which gives 0.02-0.3 on some complete read sentences, and other scores again on the
    #: same sentences over a phone line), so it only breaks near-ties
    audio_weight: float = Field(0.02, ge=0.0, le=1.0)
    #: hybrid: an audio score this high ends the turn before the transcript is scored (1.0:
    #: never; on the shared clips Smart Turn scored 0.96-0.99 mid-sentence too often)
    confident_audio: float = Field(1.0, ge=0.0, le=1.0)
    #: model mode: the learned end-of-turn model's file (None: the one in the package)
    model_path: str | None = None
    #: model mode: the probability that ends a turn (None: the model's own, chosen in
    #: training for few cut-offs on held-out synthetic voices)
    model_threshold: float | None = Field(None, ge=0.0, le=1.0)
    #: wall-clock maximum of one user turn, speech or not
    max_turn: float = Field(30.0, gt=0)


class BargeInOptions(BaseModel):
    """User speech while the agent talks. The agent's audio pauses at once; the speech
    interrupts it when confirmed, or the agent resumes where it stopped (a cough, a door,
    a backchannel)."""

    enabled: bool = True
    #: user speech must last this long to interrupt
    min_duration: float = Field(0.5, ge=0.0)
    #: and hold this many words that are not backchannels (0: duration alone)
    min_words: int = Field(1, ge=0)
    #: "mm-hmm", "yeah"... keep the agent talking
    ignore_backchannels: bool = True
    backchannels: list[str] = Field(default_factory=lambda: [
        "mm", "mhm", "mmhmm", "mm-hmm", "hmm", "uh-huh", "uh", "um", "yeah", "yep", "yes",
        "right", "okay", "ok", "sure", "i see", "got it", "alright", "cool", "nice", "wow", "oh",
        "ah", "aha", "huh", "hm", "mmm", "really", "exactly", "true", "makes sense",
        "make sense", "all right", "totally", "gotcha"])
    #: speech over the agent that stopped before it was confirmed, and whose words the
    #: recogniser is less sure of than this, is taken for a backchannel or a noise (0: off)
    unsure_confidence: float = Field(0.35, ge=0.0, le=1.0)
    #: a pause with no confirmed words resumes the agent after this long
    resume_after: float = Field(1.0, ge=0.0)


class DTMFOptions(BaseModel):
    """Phone keypad presses. Each key is a ``dtmf`` event; the keys of one entry also reach
    the LLM as a user turn, so an agent can take "press 1 for sales" without code."""

    #: send each entry to the LLM as a user turn ("The caller pressed 1 2 3 on the keypad.")
    to_llm: bool = True
    #: an entry ends at this key (not included in it)...
    terminator: str = "#"
    #: ...or after this long with no further key (seconds)
    inter_digit_timeout: float = Field(1.5, gt=0)


class RecordingOptions(BaseModel):
    """Record every session in ``dir``: ``<session id>.wav`` (stereo, the caller on the left,
    the agent on the right exactly as it was played, both on the session clock) and
    ``<session id>.json`` (turns, replies with the words heard, barge-ins, tool calls,
    metrics). Recordings hold what callers said: they are off unless asked for."""

    dir: Path
    #: applied to every text in the transcript (what the user said, what the agent said and
    #: was heard saying, tool arguments and results) before it is written: mask card numbers,
    #: names... The audio is not redacted.
    redact: Callable[[str], str] | None = None


class AgentOptions(BaseModel):
    endpointing: EndpointingOptions = Field(default_factory=EndpointingOptions)
    barge_in: BargeInOptions = Field(default_factory=BargeInOptions)
    dtmf: DTMFOptions = Field(default_factory=DTMFOptions)
    #: no first token within this long fails the reply (seconds)
    llm_timeout: float = Field(20.0, gt=0)
    #: no audio for a chunk within this long skips it (seconds)
    tts_timeout: float = Field(20.0, gt=0)
    #: a recogniser call (a chunk, a pause's or a turn's decode) that takes longer fails: the
    #: turn is dropped with an error and a fresh stream hears the next one (seconds)
    stt_timeout: float = Field(20.0, gt=0)
    tool_timeout: float = Field(10.0, gt=0)
    #: tool-call rounds in one reply before the agent must answer in words
    max_tool_rounds: int = Field(3, ge=0)
    #: messages kept besides the instructions; older ones are dropped first
    max_history: int = Field(20, ge=2)
    #: spoken when the LLM fails or stalls, after what it had said of the reply, so the user is
    #: not left in silence or mid-sentence ("" = stay quiet)
    error_reply: str = "Sorry, I had a problem answering. Could you say that again?"
    #: start the TTS on a clause for the first chunk once it has this many characters
    first_clause_chars: int = Field(24, ge=1)
    #: preemptive replies: when the user pauses and the pause's words are decoded (hybrid
    #: and model endpointing), the LLM and the TTS of the first clause start on a draft reply
    #: before the end of the turn is decided; it is committed (its audio plays at once) when
    #: the turn ends with the same words, discarded when the user goes on. A draft is never
    #: heard, never enters the conversation and runs no tool before its commit
    preemptive: bool = True
    #: record each session (audio and transcript); None: no recording
    recording: RecordingOptions | None = None


BackendSpec = str | Any

#: what an agent that takes over receives of the conversation so far: all of it (the user's
#: and the agent's words, without the previous agent's tool calls), a summary written by the
#: LLM, or nothing (only a note, if the handoff gives one)
CarryOver = Literal["all", "summary", "none"]

_DEFAULT_BACKENDS: dict[str, str] = {
    "vad": "silero", "stt": "whisper", "llm": "llamacpp", "tts": "piper",
    "turn": "smart-turn", "completeness": "llamacpp"}


class Agent:
    """What a developer writes::

        agent = Agent(instructions="You are a friendly receptionist.", tools=[book_table])

    Backends are names from the registry (``stt="whisper"``) or backend objects; their
    options go in ``*_options``. A backend left out is the default for the first agent of a
    session and the session's own for an agent handed the conversation later (so the command
    line's ``--llm`` choice holds for every agent of a workflow).

    In a workflow (docs/workflows.md) ``name`` labels the agent in events and in
    ``handoff_to`` expectations, ``carry_over`` says what it receives of the conversation
    when it takes over, and ``greeting`` is what it says on entering (else it answers at
    once, in the reply that handed over). ``tool_choice`` forces a tool on the first LLM round
    of each of its replies (a tool's name, or ``"required"``; small local models rarely call
    tools on their own); later rounds leave the choice to the model.
    """

    def __init__(
        self,
        instructions: str,
        *,
        tools: Sequence[FunctionTool | Callable[..., Any]] = (),
        greeting: str | None = None,
        name: str | None = None,
        carry_over: CarryOver = "all",
        tool_choice: str | None = None,
        vad: BackendSpec | None = None,
        stt: BackendSpec | None = None,
        llm: BackendSpec | None = None,
        tts: BackendSpec | None = None,
        turn_detector: BackendSpec | None = None,
        completeness: BackendSpec | None = None,
        vad_options: dict[str, Any] | None = None,
        stt_options: dict[str, Any] | None = None,
        llm_options: dict[str, Any] | None = None,
        tts_options: dict[str, Any] | None = None,
        options: AgentOptions | None = None,
        observers: Sequence[SessionObserver] = (),
    ) -> None:
        self.instructions = instructions
        self.tools = [as_tool(t) for t in tools]
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique, got {names}")
        self.greeting = greeting
        self.name = name or type(self).__name__
        self.carry_over: CarryOver = carry_over
        if tool_choice not in (None, "auto", "none", "required") and self.tool(tool_choice) is None:
            raise ValueError(f"tool_choice {tool_choice!r} is not one of the agent's tools")
        self.tool_choice = tool_choice
        given = {"vad": vad, "stt": stt, "llm": llm, "tts": tts,
                 "turn": turn_detector, "completeness": completeness}
        self.backends: dict[str, BackendSpec] = {
            kind: _DEFAULT_BACKENDS[kind] if spec is None else spec
            for kind, spec in given.items()}
        self.backend_options: dict[str, dict[str, Any]] = {
            "vad": vad_options or {}, "stt": stt_options or {},
            "llm": llm_options or {}, "tts": tts_options or {},
            "turn": {}, "completeness": {}}
        #: the roles this agent leaves to the session (see the class docstring): neither a
        #: backend nor options given
        self.inherited = {kind for kind, spec in given.items()
                          if spec is None and not self.backend_options[kind]}
        self.options = options or AgentOptions()
        #: attached to every session of this agent (metrics, traces: see observer.py)
        self.observers: list[SessionObserver] = list(observers)

    def tool(self, name: str) -> FunctionTool | None:
        return next((t for t in self.tools if t.name == name), None)

    def with_backend(self, kind: str, spec: BackendSpec, **options: Any) -> Agent:
        """Override one backend (the CLI's ``--llm openai``); returns self."""
        self.backends[kind] = spec
        self.backend_options[kind] = options
        self.inherited.discard(kind)
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
