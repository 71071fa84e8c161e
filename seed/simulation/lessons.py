"""A learner's lessons: which one next, each attempt question by question, the progress per lesson and the XP per week."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from langlearn import rules
from langlearn.seed.content import CourseInfo, LessonInfo
from langlearn.seed.simulation.achievements import Achievements
from langlearn.seed.simulation.catalogue import BASE_MS, EASE, LEVELS, NEXT_COURSE, Catalogue
from langlearn.seed.simulation.clock import SECOND_MS, day_of, week_of
from langlearn.seed.simulation.journal import Journal
from langlearn.seed.simulation.rows import Day, LessonAttempt, Millis, QuestionAttempt, Uuid, uuid_text
from langlearn.seed.simulation.vocabulary import Vocabulary

ABANDON_CHANCE = 0.03
HINT_CHANCE = 0.08
# how much longer than the median a try takes: log-normal (sigma 0.35), as 1024 quantiles picked at random
RESPONSE_FACTORS = tuple(math.exp(NormalDist(0, 0.35).inv_cdf((i + 0.5) / 1024)) for i in range(1024))


@dataclass
class Progress:
    """A learner's progress on one lesson (`user_progress`)."""

    lesson: LessonInfo
    status: str
    score: int
    completed: Millis | None
    seconds: int
    attempts: int
    first: Millis
    last: Millis


@dataclass
class Week:
    """A learner's week on the leaderboard, from Monday."""

    xp: int
    lessons: int
    first: Millis
    last: Millis
    outcome: rules.WeekOutcome | None = None  # set when the week is closed


class Lessons:
    def __init__(self, journal: Journal, achievements: Achievements, vocabulary: Vocabulary, catalogue: Catalogue,
                 course: str, skill: float) -> None:
        self.journal = journal
        self.achievements = achievements
        self.vocabulary = vocabulary
        self.courses = catalogue.courses
        self.course: CourseInfo = self.courses[course]
        self.level = self.course.level
        self.skill = skill
        self.passed: dict[str, set[int]] = {}  # lesson positions passed, per course
        self.perfected: set[Uuid] = set()  # lessons passed with every first answer right
        self.practised: dict[Uuid, Day] = {}  # the last day a replay of each lesson earned practice XP
        self.completed_courses: set[str] = set()
        self.xp = 0
        self.progress: dict[Uuid, Progress] = {}
        self.weeks: dict[Day, Week] = {}  # by week_start

    def next_lesson(self) -> LessonInfo:
        course, rng = self.course, self.journal.rng
        passed = self.passed.setdefault(course.key, set())
        if len(passed) == len(course.lessons):
            follow_up = NEXT_COURSE.get(course.key)
            if follow_up and rng.random() < 0.7:
                self.course = course = self.courses[follow_up]
                passed = self.passed.setdefault(course.key, set())
            else:
                return rng.choice(course.lessons)
        if passed and rng.random() < 0.2:  # practise something already learnt
            return course.lessons[rng.choice(sorted(passed))]
        return course.lessons[min(set(range(len(course.lessons))) - passed)]

    def attempt(self, lesson: LessonInfo, start: Millis, device: str, boosted: bool) -> tuple[Millis, bool]:
        """Play `lesson` from `start`; returns when it ended and whether it passed."""
        journal = self.journal
        rng, new_id = journal.rng, journal.new_id
        random, bits = rng.random, rng.getrandbits
        attempt_id = new_id()
        repeat = lesson.position in self.passed.get(lesson.course_key, ())
        skill = self.skill + (0.05 if repeat else 0.0)
        exercises = lesson.exercises
        # answers before the learner walks away; when they stay, more than any play of the lesson takes
        abandon_after = rng.randrange(1, len(exercises)) if random() < ABANDON_CHANCE else len(exercises) * rules.LESSON_LIVES
        questions: list[tuple[object, ...]] = []
        queue = [(exercise, 1) for exercise in exercises]
        clock = start + int(rng.uniform(3, 8) * SECOND_MS)  # the lesson's introduction
        lives, first_correct, hints, spent_ms = rules.LESSON_LIVES, 0, 0, 0
        while queue and lives > 0 and len(questions) < abandon_after:
            exercise, number = queue.pop(0)
            hint = random() < HINT_CHANCE
            correct = random() < skill + EASE[exercise.difficulty] + (0.15 if hint else 0.0) + (0.2 if number > 1 else 0.0)
            ms = int(RESPONSE_FACTORS[bits(10)] * BASE_MS[exercise.type] / (1.3 if number > 1 else 1))
            clock += ms + 400
            if correct:
                answer, confidence = exercise.answer, round(0.55 + 0.45 * random(), 2)
                first_correct += number == 1
            else:
                wrong = exercise.wrong_answers
                answer, confidence = wrong[int(random() * len(wrong))], round(0.1 + 0.6 * random(), 2)
                lives -= 1
                queue.append((exercise, number + 1))
            questions.append(QuestionAttempt(
                new_id(), attempt_id, exercise.id, exercise.type, answer, exercise.answer, correct, ms, hint, number,
                confidence, exercise.difficulty, clock,
            ))
            hints += hint
            spent_ms += ms
        total = len(exercises)
        finished = not queue or lives == 0
        score = rules.lesson_score(first_correct, total, finished)
        passed = rules.lesson_passes(score, lesson.pass_score, finished, lives)
        perfect = rules.is_perfect(passed, first_correct, total)
        today = day_of(start)
        play = rules.play_kind(repeat, self.practised.get(lesson.id) == today)
        xp = rules.lesson_xp(lesson.xp_reward, passed, perfect, boosted, play)
        elapsed_ms = clock - start
        end = clock + 2 * SECOND_MS
        journal.rows["lesson_attempts"].append(LessonAttempt(
            attempt_id, journal.user_id, lesson.id, start, end if finished else None, score, passed, xp, total, first_correct,
            hints, lives, elapsed_ms, spent_ms // max(1, len(questions)), device, start,
        ))
        journal.rows["question_attempts"].extend(questions)
        self._record_progress(lesson, start, end, score, passed, elapsed_ms)
        week_start = week_of(today)
        week = self.weeks.get(week_start)
        if week is None:
            week = self.weeks[week_start] = Week(0, 0, start, start)
        week.xp += xp
        week.last = end
        journal.touch(end)
        if passed:
            week.lessons += 1
            self.xp += xp
            self.passed.setdefault(lesson.course_key, set()).add(lesson.position)
            if not repeat:  # lessons count once each, as the live operation counts them: replays are practice
                self.achievements.count("lesson_complete", end)
            self.achievements.reach("xp_earned", self.xp, end)
            if perfect and lesson.id not in self.perfected:
                self.perfected.add(lesson.id)
                self.achievements.count("perfect_score", end)
            if play is rules.Play.PRACTICE:
                self.practised[lesson.id] = today
                self.vocabulary.learn(lesson, end)
                self._milestones(lesson, end)
        return end, passed

    def _record_progress(self, lesson: LessonInfo, start: Millis, end: Millis, score: int, passed: bool, elapsed_ms: int) -> None:
        row = self.progress.get(lesson.id)
        if row is None:
            row = self.progress[lesson.id] = Progress(lesson, "in_progress", 0, None, 0, 0, start, end)
        row.status = "completed" if passed or row.status == "completed" else "in_progress"
        row.score = max(row.score, score)
        if passed and row.completed is None:
            row.completed = end
        row.seconds += elapsed_ms // 1000
        row.attempts += 1
        row.last = end

    def _milestones(self, lesson: LessonInfo, when: Millis) -> None:
        """A course or a unit (three lessons) finished with this lesson's first pass."""
        course = self.courses[lesson.course_key]
        passed = self.passed[course.key]
        if len(passed) == len(course.lessons) and course.key not in self.completed_courses:
            self.completed_courses.add(course.key)
            self.journal.feed("course_completed", when, f"completed the course {course.title}", {"course_id": uuid_text(course.id)})
            self.achievements.reach("course_complete", len(self.completed_courses), when)
            following = LEVELS[min(len(LEVELS) - 1, LEVELS.index(course.level) + 1)]
            if LEVELS.index(following) > LEVELS.index(self.level):
                self.level = following
        elif (lesson.position + 1) % 3 == 0 and all(p in passed for p in range(lesson.position - 2, lesson.position + 1)):
            self.journal.feed("unit_completed", when, f"finished a unit of {course.title}",
                              {"course_id": uuid_text(course.id), "lesson_id": uuid_text(lesson.id)})
