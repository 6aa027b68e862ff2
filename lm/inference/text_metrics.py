"""Metrics of predicted text against references, on a 0-100 scale: corpus BLEU (sacrebleu) and ROUGE-1/2/Lsum
F-measures (rouge-score) as T5 reports them, and SQuAD's exact match and token F1.

BLEU: `sacrebleu.corpus_bleu` with T5's settings (t5/evaluation/metrics.py: exponential smoothing, the 'intl'
tokenizer, case-sensitive, no effective order). ROUGE: `rouge_score.RougeScorer(['rouge1', 'rouge2', 'rougeLsum'],
use_stemmer=True)` with T5's sentence split for rougeLsum (' . ' ends a line); T5 aggregates with a bootstrap,
whose middle value is the mean over examples up to resampling noise, so the mean is reported here (deterministic).
"""
import collections
import re
import string
from collections.abc import Sequence

ROUGE_TYPES = ('rouge1', 'rouge2', 'rougeLsum')
_ARTICLES = re.compile(r'\b(a|an|the)\b', re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
  """Corpus BLEU of the predictions against one reference each."""
  import sacrebleu
  return float(sacrebleu.corpus_bleu(list(predictions), [list(references)], smooth_method='exp', smooth_value=0.0,
                                     force=False, lowercase=False, tokenize='intl',
                                     use_effective_order=False).score)


def _sentences(text: str) -> str:
  """T5's preparation for rougeLsum: sentences on separate lines."""
  return text.replace(' . ', ' .\n')


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
  """{'rouge1', 'rouge2', 'rougeLsum'}: mean F-measure x 100 over the pairs."""
  from rouge_score import rouge_scorer
  scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
  totals = dict.fromkeys(ROUGE_TYPES, 0.0)
  for prediction, reference in zip(predictions, references, strict=True):
    scores = scorer.score(_sentences(reference), _sentences(prediction))
    for name in ROUGE_TYPES:
      totals[name] += scores[name].fmeasure
  return {name: 100.0 * total / max(len(predictions), 1) for name, total in totals.items()}


def all_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
  """{'bleu', 'rouge1', 'rouge2', 'rougeLsum'} of one set of predictions."""
  return {'bleu': bleu(predictions, references), **rouge(predictions, references)}


def squad_normalize(text: str) -> str:
  """SQuAD's answer normalisation: lowercase, punctuation removed, articles (a, an, the) removed, whitespace
  collapsed."""
  text = ''.join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  return ' '.join(_ARTICLES.sub(' ', text).split())


def squad_f1(prediction: str, gold: str) -> float:
  """Token F1 of two normalised answers; when either is empty (a no-answer), 1.0 iff both are."""
  predicted, expected = squad_normalize(prediction).split(), squad_normalize(gold).split()
  if not predicted or not expected:
    return float(predicted == expected)
  common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
  if not common:
    return 0.0
  precision, recall = common / len(predicted), common / len(expected)
  return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
  """{'exact_match', 'f1'} x 100, SQuAD v1.1 / v2.0's official definition: per question the max over its gold
  answers (none: the gold answer is '', so only an empty prediction scores), averaged over questions."""
  exact = f1 = 0.0
  for prediction, answers in zip(predictions, golds, strict=True):
    answers = list(answers) or ['']
    exact += max(float(squad_normalize(prediction) == squad_normalize(a)) for a in answers)
    f1 += max(squad_f1(prediction, a) for a in answers)
  count = max(len(predictions), 1)
  return {'exact_match': 100.0 * exact / count, 'f1': 100.0 * f1 / count}
