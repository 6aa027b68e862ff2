"""Entity-level precision, recall and F1 of tag sequences in IOB2 (`B-TYPE` begins an entity, `I-TYPE` continues
it, `O` is outside), with seqeval's default (conlleval) reading: an `I-TYPE` after `O` or after another type also
begins an entity. An entity counts as correct only with the same type, start and end. Micro averages over all
entities of all sequences, on a 0-1 scale like seqeval (tests/test_tagging.py compares with it)."""
from collections.abc import Sequence


def _split(tag: str) -> tuple[str, str]:
  """('B' | 'I' | 'O', type) of one tag."""
  if tag == 'O' or not tag:
    return 'O', ''
  prefix, _, kind = tag.partition('-')
  return prefix, kind


def entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
  """{(type, first index, last index)} of one sequence."""
  found, kind, start = set(), '', None
  for i, tag in enumerate(list(tags) + ['O']):
    prefix, this_kind = _split(tag)
    continues = prefix == 'I' and start is not None and this_kind == kind
    if start is not None and not continues:
      found.add((kind, start, i - 1))
      start = None
    if prefix in ('B', 'I') and not continues:
      kind, start = this_kind, i
  return found


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
  """{'entity_precision', 'entity_recall', 'entity_f1'} (0 where a denominator is 0) over paired sequences."""
  correct = num_gold = num_predicted = 0
  for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
    if len(gold_tags) != len(predicted_tags):
      raise ValueError(f'{len(gold_tags)} gold tags but {len(predicted_tags)} predicted')
    expected, got = entities(gold_tags), entities(predicted_tags)
    correct, num_gold, num_predicted = correct + len(expected & got), num_gold + len(expected), \
        num_predicted + len(got)
  precision = correct / num_predicted if num_predicted else 0.0
  recall = correct / num_gold if num_gold else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {'entity_precision': precision, 'entity_recall': recall, 'entity_f1': f1}
