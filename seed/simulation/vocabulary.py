"""A learner's words: learnt with the lessons, reviewed with SM-2 (`rules.schedule`), due again in a queue by date."""

from __future__ import annotations

from heapq import heappop, heappush

from langlearn import rules
from langlearn.seed.content import LessonInfo
from langlearn.seed.simulation.achievements import Achievements
from langlearn.seed.simulation.catalogue import Catalogue
from langlearn.seed.simulation.clock import DAY_MS, SECOND_MS, iso_seconds
from langlearn.seed.simulation.journal import Journal
from langlearn.seed.simulation.rows import DailyReviewSession, Day, Millis, Uuid

RECALLED = (3, 4, 4, 5, 5)  # the qualities of a remembered word, and of a forgotten one
FORGOTTEN = (0, 1, 2, 2)


class Word:
    """What the scheduler knows of one word the learner met, and the reviews so far (each as JSON text)."""

    __slots__ = ("id", "vocab_id", "created", "easiness", "interval", "repetitions", "reviews", "last_review", "due", "mastered",
                 "history")

    def __init__(self, word_id: Uuid, vocab_id: Uuid, created: Millis) -> None:
        self.id = word_id
        self.vocab_id = vocab_id
        self.created = created
        self.easiness = rules.INITIAL_EASINESS
        self.interval = self.repetitions = self.reviews = 0
        self.last_review: Millis = created
        self.due: Millis | None = None
        self.mastered = False  # rules.mastered, as of the last review
        self.history: list[str] = []


class Vocabulary:
    def __init__(self, journal: Journal, achievements: Achievements, catalogue: Catalogue, skill: float, per_review: int) -> None:
        self.journal = journal
        self.achievements = achievements
        self.vocab_text = catalogue.vocab_text
        self.skill = skill
        self.per_review = per_review  # words in a daily review at most
        self.words: dict[Uuid, Word] = {}
        self.mastered = 0  # words mastered now (rules.mastered), kept as reviews change them
        self.queue: list[tuple[Millis, int, Uuid]] = []  # (due, order, vocab id), a heap; stale entries are skipped
        self._random = journal.rng.random

    def learn(self, lesson: LessonInfo, when: Millis) -> None:
        """Meet the lesson's new words (a first review each)."""
        for offset, vocab_id in enumerate(lesson.vocab_ids):
            if vocab_id not in self.words:
                word = self.words[vocab_id] = Word(self.journal.new_id(), vocab_id, when)
                self._review(word, when + offset * SECOND_MS, len(self.words))

    def _review(self, word: Word, when: Millis, order: int) -> bool:
        random, due, repetitions = self._random, word.due, word.repetitions
        overdue_days = (when - due) / DAY_MS if due is not None and when > due else 0.0
        # a word is harder to recall the longer it is overdue (up to 5 days), easier the more often recalled in a row
        chance = self.skill - 0.04 * (overdue_days if overdue_days < 5 else 5) + 0.02 * (repetitions if repetitions < 4 else 4)
        quality = RECALLED[int(random() * 5)] if random() < chance else FORGOTTEN[int(random() * 4)]
        word.easiness, interval, repetitions = rules.schedule(quality, word.easiness, word.interval, repetitions)
        word.interval, word.repetitions = interval, repetitions
        word.reviews += 1
        word.last_review = when
        word.due = due = when + interval * DAY_MS
        word.history.append(f'{{"at":"{iso_seconds(when)}","interval":{interval},"quality":{quality}}}')
        heappush(self.queue, (due, order, word.vocab_id))
        mastered = rules.mastered(interval, repetitions)
        if mastered != word.mastered:
            word.mastered = mastered
            self.mastered += 1 if mastered else -1
            if mastered:
                self.achievements.reach("vocab_mastered", self.mastered, when)
        return rules.recalled(quality)

    def daily_review(self, day: Day, start: Millis) -> Millis:
        """Review the words due by `start` (up to the persona's number); returns when the review is over."""
        queue, due = self.queue, list[Word]()
        while queue and len(due) < self.per_review and queue[0][0] <= start:
            when, _, vocab_id = heappop(queue)
            word = self.words[vocab_id]
            if word.due == when:  # an entry superseded by a later review is stale
                due.append(word)
        if not due:
            return start
        finished = self._random() > 0.05
        done = due if finished else due[: self.journal.rng.randrange(1, len(due) + 1)]
        clock, correct = start, 0
        order = len(self.words) + self.achievements.metrics["reviews_completed"] * 100
        uniform = self.journal.rng.uniform
        for position, word in enumerate(done):
            clock += int(uniform(4, 12) * SECOND_MS)
            correct += self._review(word, clock, order + position)
        for word in due[len(done):]:
            assert word.due is not None  # every queued word has been reviewed
            heappush(queue, (word.due, 0, word.vocab_id))
        finished = finished and len(done) == len(due)
        journal = self.journal
        vocab_list = '["' + '","'.join([self.vocab_text[word.vocab_id] for word in due]) + '"]'
        journal.rows["daily_review_sessions"].append(DailyReviewSession(
            journal.new_id(), journal.user_id, day, len(due), len(done), correct, start, clock if finished else None, finished,
            vocab_list, start,
        ))
        if finished:
            self.achievements.count("reviews_completed", clock)
        journal.touch(clock)
        return clock + 30 * SECOND_MS
