"""Course definition files (YAML): the format the project's architecture fixes.

```yaml
slug: climate-basics            # [a-z0-9-]+, unique per territory
title: Climate basics
description: Why and how we act.
version: 1
prerequisites: []               # badge slugs the learner must hold to enrol
awards: climate-basics          # badge slug; created if missing (name = course title)
pass_mark: 0.6                  # share of quiz questions answered right
lessons:
  - title: The carbon cycle
    body: |
      Markdown text ...
    materials: [slides/carbon.pdf]   # paths relative to the YAML file, or CIDs
quiz:
  - question: Which gas ...?
    choices: [CO2, Argon, Neon]
    answer: 1                   # 1-based
```
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from core.errors import Refused

SLUG = r"^[a-z0-9][a-z0-9-]*$"
MAX_FILE_BYTES = 1024 * 1024


class CourseFileError(Refused):
    """The file is not a valid course definition; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LessonSpec(_Strict):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=50_000)
    materials: tuple[str, ...] = ()


class QuestionSpec(_Strict):
    question: str = Field(min_length=1, max_length=2000)
    choices: tuple[str, ...] = Field(min_length=2, max_length=10)
    answer: int = Field(ge=1)

    @model_validator(mode="after")
    def _answer_in_range(self) -> QuestionSpec:
        if self.answer > len(self.choices):
            raise ValueError(f"answer {self.answer} but only {len(self.choices)} choices")
        return self


class CourseFile(_Strict):
    slug: str = Field(pattern=SLUG, max_length=63)
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    version: int = Field(ge=1)
    prerequisites: tuple[str, ...] = ()
    awards: str = Field(pattern=SLUG, max_length=63)
    # A badge is earned, not handed out: a course that awards one has a quiz to pass.
    pass_mark: float = Field(gt=0, le=1)
    lessons: tuple[LessonSpec, ...] = Field(min_length=1)
    quiz: tuple[QuestionSpec, ...] = Field(min_length=1)


def parse_course_file(text: str | bytes) -> CourseFile:
    if len(text) > MAX_FILE_BYTES:
        raise CourseFileError("the course file is larger than 1 MB")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CourseFileError("the course file is not UTF-8 text") from exc
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CourseFileError(f"the course file is not valid YAML{where}") from exc
    if not isinstance(data, dict):
        raise CourseFileError("the course file must be a YAML mapping (slug, title, lessons, ...)")
    try:
        return CourseFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        raise CourseFileError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from exc
