"""Extractive QA post-processing: from the start/end logits of a question's windows to its answer text.

Per window, the data.n_best highest start and end logits among the context tokens are paired (end >= start, at most
data.max_answer_len tokens), scored start + end logit, and cut out of the context by the tokens' character spans;
the best span over all windows of the question wins. With data.allow_null (SQuAD v2) the question is answered ''
when the null score (the [CLS] start + end logits, the lowest over its windows) exceeds the best span's score by
more than data.null_threshold — Hugging Face's `postprocess_qa_predictions`.
"""
import dataclasses
from collections.abc import Sequence

import numpy as np

from lm.data import qa


@dataclasses.dataclass(frozen=True)
class Answer:
  """A predicted answer: its text ('' = no answer), score, and character offset in the context (-1: none)."""
  text: str
  score: float
  start: int = -1


def window_spans(start_logits: np.ndarray, end_logits: np.ndarray, offsets: np.ndarray, *, n_best: int,
                 max_answer_len: int) -> list[tuple[float, int, int]]:
  """(score, first character, end character) of the candidate spans of one window; `offsets` [T, 2] holds each
  context token's character span, -1 for the other positions."""
  in_context = np.flatnonzero(offsets[:, 0] >= 0)
  if not len(in_context):
    return []
  starts = in_context[np.argsort(-start_logits[in_context], kind='stable')[:n_best]]
  ends = in_context[np.argsort(-end_logits[in_context], kind='stable')[:n_best]]
  spans = []
  for s in starts:
    for e in ends:
      if s <= e < s + max_answer_len:
        spans.append((float(start_logits[s] + end_logits[e]), int(offsets[s, 0]), int(offsets[e, 1])))
  return spans


def best_answer(context: str, windows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], *, n_best: int = 20,
                max_answer_len: int = 30, allow_null: bool = False, null_threshold: float = 0.0) -> Answer:
  """The answer to one question from its windows' (start_logits [T], end_logits [T], offsets [T, 2])."""
  spans = [span for start, end, offsets in windows
           for span in window_spans(start, end, offsets, n_best=n_best, max_answer_len=max_answer_len)]
  null = min(float(start[qa.NULL_POSITION] + end[qa.NULL_POSITION]) for start, end, _ in windows)
  best = max(spans, default=None)
  if best is None or (allow_null and null - best[0] > null_threshold):
    return Answer('', null)
  text = context[best[1]:best[2]]
  return Answer(text.strip(), best[0], best[1] + len(text) - len(text.lstrip()))


def answers(features: qa.QaFeatures, start_logits: np.ndarray, end_logits: np.ndarray,
            data_cfg) -> dict[int, Answer]:
  """{record index: Answer} for the records whose windows have logits (rows of `start_logits` / `end_logits` are
  the features' windows in order; NaN rows: not computed)."""
  by_record: dict[int, list] = {}
  for i in range(len(features)):
    if not np.isnan(start_logits[i, 0]):
      by_record.setdefault(features.example_of(i), []).append((start_logits[i], end_logits[i], features.offsets(i)))
  return {record: best_answer(features.records[record].context, windows, n_best=data_cfg.n_best,
                              max_answer_len=data_cfg.max_answer_len, allow_null=data_cfg.allow_null,
                              null_threshold=data_cfg.null_threshold)
          for record, windows in by_record.items()}
