"""Generation metrics as T5 reports them: corpus BLEU (sacrebleu) and ROUGE-1/2/Lsum F-measures (rouge-score),
both on a 0-100 scale.

BLEU: `sacrebleu.corpus_bleu` with T5's settings (t5/evaluation/metrics.py: exponential smoothing, the 'intl'
tokenizer, case-sensitive, no effective order). ROUGE: `rouge_score.RougeScorer(['rouge1', 'rouge2', 'rougeLsum'],
use_stemmer=True)` with T5's sentence split for rougeLsum (' . ' ends a line); T5 aggregates with a bootstrap,
whose middle value is the mean over examples up to resampling noise, so the mean is reported here (deterministic).
"""
from collections.abc import Sequence

ROUGE_TYPES = ('rouge1', 'rouge2', 'rougeLsum')


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
