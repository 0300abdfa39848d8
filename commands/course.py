"""!course: list, info, enroll, next, answer, progress, import."""

from __future__ import annotations

from mautrix.errors import MatrixError
from mautrix.types import ContentURI, EventID, MediaMessageEventContent, MessageType, RoomID

from core.effects import Effects
from core.errors import Refused, TooLarge, Unavailable
from core.html import code, escape, markdown_to_html
from core.matrix import MatrixConnection
from workflows.course_file import CourseFileError, parse_course_file
from workflows.courses import CourseService, Finished, LessonStep, QuestionStep

from .decorators import argument, command, requires
from .parsers import choice_number, slug
from .permissions import Permission
from .router import CommandContext

MAX_COURSE_FILE = 1024 * 1024


def _percent(score: float) -> str:
    return f"{score * 100:.0f}%"


class CourseCommands:
    def __init__(self, courses: CourseService, matrix: MatrixConnection, effects: Effects) -> None:
        self.courses = courses
        self.matrix = matrix  # reads only (the course file replied to); sends are effects
        self.effects = effects

    @command("course list", help="Published courses with their badge and prerequisites")
    async def list(self, ctx: CommandContext) -> None:
        courses = await self.courses.courses.list_latest()
        if not courses:
            await ctx.reply(
                f"No courses yet. A course admin imports them with {ctx.prefix}course import."
            )
            return
        items = []
        for course in courses:
            needs = (
                " — requires " + ", ".join(code(p) for p in course.prerequisites)
                if course.prerequisites
                else ""
            )
            items.append(
                f"<li><strong>{escape(course.title)}</strong> ({code(course.slug)}) — "
                f"earns {code(course.awards)}{needs}</li>"
            )
        await ctx.reply(
            f"<strong>Courses</strong><ul>{''.join(items)}</ul>"
            f"Send {code(ctx.prefix + 'course enroll <course>')} to start one."
        )

    @command("course info", help="What a course covers, what it requires and what it earns")
    @argument("course", parser=slug)
    async def info(self, ctx: CommandContext, course: str) -> None:
        found = await self.courses.course(course)
        needs = ", ".join(code(p) for p in found.prerequisites) or "nothing"
        await ctx.reply(
            f"<strong>{escape(found.title)}</strong> ({code(found.slug)}, version {found.version})"
            f"<br>{escape(found.description)}<ul>"
            f"<li>{found.lesson_count} lessons, {found.question_count} quiz questions, "
            f"pass mark {_percent(found.pass_mark)}</li>"
            f"<li>earns the badge {code(found.awards)}</li><li>requires {needs}</li></ul>"
        )

    @command("course enroll", help="Enrol in a course (its prerequisite badges are checked)")
    @argument("course", parser=slug)
    async def enroll(self, ctx: CommandContext, course: str) -> None:
        found, again = await self.courses.enroll(ctx.sender, course)
        again_text = " again (passing renews its badge)" if again else ""
        await ctx.reply(
            f"You are enrolled in <strong>{escape(found.title)}</strong>{again_text}: "
            f"{found.lesson_count} lessons, then {found.question_count} questions. "
            f"Send {code(ctx.prefix + 'course next ' + course)} to begin."
        )

    @command("course next", help="The next lesson or quiz question of a course")
    @argument("course", parser=slug)
    async def next(self, ctx: CommandContext, course: str) -> None:
        step = await self.courses.next(ctx.sender, course)
        if isinstance(step, LessonStep):
            lesson, total = step.lesson, step.course.lesson_count
            materials = ""
            if lesson.materials:
                materials = "<p>Materials: " + ", ".join(code(m) for m in lesson.materials) + "</p>"
            following = "lesson" if lesson.position < total else "step (the quiz)"
            if lesson.position == total and step.course.question_count == 0:
                following = "step"
            await ctx.reply(
                f"<h3>Lesson {lesson.position}/{total}: {escape(lesson.title)}</h3>"
                f"{markdown_to_html(lesson.body)}{materials}"
                f"<p>Send {code(ctx.prefix + 'course next ' + course)} for the next {following}.</p>"
            )
            store = self.courses.materials
            if store is not None:
                private = False
                for material in await store.of_lesson(step.course.id, lesson.position):
                    private |= await store.queue_delivery(
                        self.effects,
                        step.course.id,
                        lesson.position,
                        material,
                        room_id=ctx.room_id,
                        learner=ctx.sender,
                    )
                if private:
                    await ctx.reply(
                        "This course is badge-gated: its materials come to you in your private "
                        "chat with me, never into a shared room."
                    )
        elif isinstance(step, QuestionStep):
            question, total = step.question, step.course.question_count
            again = " (still open)" if step.repeated else ""
            choices = "".join(f"<li>{escape(choice)}</li>" for choice in question.choices)
            await ctx.reply(
                f"<strong>Question {question.position}/{total}</strong>{again}, attempt "
                f"{step.attempt}: {escape(question.question)}<ol>{choices}</ol>"
                f"Answer with {code(f'{ctx.prefix}course answer {course} <number>')}."
            )
        else:
            assert isinstance(step, Finished)
            done = (
                "You have finished every lesson: the course is complete and its badge is "
                "on its way."
                if step.completed_now
                else "You have completed this course."
            )
            await ctx.reply(done)

    @command("course answer", help="Answer the open quiz question with the number of a choice")
    @argument("course", parser=slug)
    @argument("choice", parser=choice_number)
    async def answer(self, ctx: CommandContext, course: str, choice: int) -> None:
        outcome = await self.courses.answer(ctx.sender, course, choice, room_id=ctx.room_id)
        verdict = "✅ Right." if outcome.correct else "❌ Not quite."
        if not outcome.attempt_finished:
            await ctx.reply(
                f"{verdict} Send {code(ctx.prefix + 'course next ' + course)} for the next question."
            )
            return
        assert outcome.score is not None
        if outcome.passed:
            await ctx.reply(
                f"{verdict} You scored {_percent(outcome.score)} and passed "
                f"<strong>{escape(outcome.course.title)}</strong>! The badge "
                f"{code(outcome.course.awards)} is on its way."
            )
        else:
            await ctx.reply(
                f"{verdict} You scored {_percent(outcome.score)}, below the pass mark of "
                f"{_percent(outcome.course.pass_mark)}. Send {code(ctx.prefix + 'course next ' + course)} "
                "to start a new attempt."
            )

    @command("course progress", help="Where you are in your courses")
    @argument("course", parser=slug, required=False)
    async def progress(self, ctx: CommandContext, course: str | None) -> None:
        entries = await self.courses.progress(ctx.sender, course)
        if not entries:
            await ctx.reply(
                f"You are not enrolled in any course. Send {code(ctx.prefix + 'course list')}."
            )
            return
        items = []
        for entry in entries:
            c, e = entry.course, entry.enrollment
            if e.completed_at:
                state = f"completed on {e.completed_at:%Y-%m-%d}"
                if e.best_score is not None:
                    state += f" with {_percent(e.best_score)}"
            elif e.lessons_done < c.lesson_count:
                state = f"lesson {e.lessons_done}/{c.lesson_count}"
            else:
                state = (
                    f"quiz, attempt {e.attempt}, question {e.questions_shown}/{c.question_count}"
                )
                if e.best_score is not None:
                    state += f", best score {_percent(e.best_score)}"
            items.append(
                f"<li><strong>{escape(c.title)}</strong> ({code(c.slug)} v{c.version}): "
                f"{state}</li>"
            )
        await ctx.reply(f"<ul>{''.join(items)}</ul>")

    @command("course import", help="Import a course: send this as a reply to a course YAML file")
    @requires(Permission.COURSE_ADMIN)
    async def import_(self, ctx: CommandContext) -> None:
        if ctx.reply_to is None:
            raise Refused(
                "Upload the course YAML file to this room, then reply to it with "
                f"{ctx.prefix}course import."
            )
        data, name = await self._download(ctx.room_id, ctx.reply_to)
        try:
            spec = parse_course_file(data)
        except CourseFileError as exc:
            raise Refused(f"{name} is not a valid course: {exc}.") from exc
        outcome = await self.courses.import_course(
            spec, actor=ctx.sender, source=f"matrix:{ctx.room_id}/{ctx.reply_to}"
        )
        created = f" The badge {code(spec.awards)} was created." if outcome.badge_created else ""
        await ctx.reply(
            f"Imported <strong>{escape(spec.title)}</strong> ({code(spec.slug)}) version "
            f"{spec.version}: {len(spec.lessons)} lessons, {len(spec.quiz)} questions.{created}"
        )

    async def _download(self, room_id: RoomID, event_id: EventID) -> tuple[bytes, str]:
        try:
            event = await self.matrix.bot.get_event(room_id, event_id)
        except MatrixError as exc:
            raise Refused("I cannot read the message you replied to.") from exc
        content = event.content
        if not (
            isinstance(content, MediaMessageEventContent)
            and content.msgtype == MessageType.FILE
            and content.url
        ):
            raise Refused("Reply to an uploaded course file (a .yaml file), not to a message.")
        size = content.info.size if content.info and content.info.size else 0
        if size > MAX_COURSE_FILE:
            raise TooLarge("That file is larger than 1 MB; a course file is much smaller.")
        try:
            data = await self.matrix.bot.download_media(ContentURI(content.url))
        except MatrixError as exc:
            raise Unavailable("I could not download that file from the homeserver.") from exc
        return data, str(content.body or "the file")
