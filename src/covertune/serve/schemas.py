"""Request bodies (pydantic): covertune's /v1/cover-letter, OpenAI chat completions, Ollama generate/chat.

Unknown keys are ignored (clients send more than these servers use); wrong types are 422 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from covertune.core.records import INPUT_FIELDS

Seed = Optional[Annotated[int, Field(ge=0, le=2**32 - 1)]]  # the range torch's and numpy's seeds take


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Sampling(_Body):
    """Decoding settings a request may give; greedy unless temperature > 0."""

    max_new_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    top_k: Optional[int] = Field(None, ge=0)
    seed: Seed = None
    repetition_penalty: Optional[float] = Field(None, gt=0)


class CoverLetterRequest(Sampling):
    job_title: Optional[StrictStr] = ""
    hiring_company: Optional[StrictStr] = ""
    preferred_qualifications: Optional[StrictStr] = ""
    applicant_name: Optional[StrictStr] = ""
    current_experience: Optional[StrictStr] = ""
    past_experience: Optional[StrictStr] = ""
    skillsets: Optional[StrictStr] = ""
    qualifications: Optional[StrictStr] = ""
    stream: StrictBool = False
    model: Optional[StrictStr] = None
    candidates: Optional[int] = Field(None, ge=1)
    select: Optional[StrictStr] = None
    form: Optional[StrictStr] = None

    def fields(self) -> dict[str, str]:
        """The 8 fields; null counts as empty (rendered "None" in the prompt, as a missing field)."""
        return {k: getattr(self, k) or "" for k in INPUT_FIELDS}


class ContentPart(_Body):
    type: StrictStr = "text"
    text: StrictStr = ""


class ChatMessage(_Body):
    role: StrictStr
    content: Union[StrictStr, list[ContentPart], None] = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content if p.type == "text")
        return self.content or ""


class ChatCompletionRequest(_Body):
    """OpenAI ``POST /v1/chat/completions`` (the fields this server uses)."""

    model: Optional[StrictStr] = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    seed: Seed = None
    n: int = Field(1, ge=1, le=1)
    stream_options: Optional[dict[str, Any]] = None


class OllamaOptions(_Body):
    num_predict: Optional[int] = None
    temperature: Optional[float] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    top_k: Optional[int] = Field(None, ge=0)
    seed: Seed = None
    repeat_penalty: Optional[float] = Field(None, gt=0)


class OllamaGenerateRequest(_Body):
    """Ollama ``POST /api/generate``; ``stream`` defaults to true as in Ollama."""

    model: StrictStr
    prompt: StrictStr = ""
    system: Optional[StrictStr] = None
    stream: StrictBool = True
    options: OllamaOptions = Field(default_factory=OllamaOptions)


class OllamaChatRequest(_Body):
    """Ollama ``POST /api/chat``; ``stream`` defaults to true as in Ollama."""

    model: StrictStr
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = True
    options: OllamaOptions = Field(default_factory=OllamaOptions)
