"""The task heads of Hugging Face's `<Model>For<Task>` classes, for every layout: which class an lm model with a
given model.task_head exports to, the head's config.json labels and tensors, and what such a class leaves out of
the base model (its pretraining heads, which lm keeps at their fresh init on import and drops on export).

  model.task_head  class suffix               HF head tensor                         lm parameters
  'class'          ForSequenceClassification  classifier (BERT)                      class_head/dense
  'span'           ForQuestionAnswering       qa_outputs                             qa_head/dense
  'token'          ForTokenClassification     classifier (BERT, GPT-2), score (Llama)  tag_head/dense
"""
from lm.hf import rules

SUFFIXES = {'class': 'ForSequenceClassification', 'span': 'ForQuestionAnswering', 'token': 'ForTokenClassification'}
_PRETRAINING_HEADS = ('pooler/', 'mlm_', 'nsp_head/', 'lm_head/')  # lm parameters a task class may have no place for
_HEAD_PARAMS = {'class': 'class_head/dense', 'span': 'qa_head/dense', 'token': 'tag_head/dense'}


def task_head(arch: str) -> str | None:
  """The model.task_head of an HF architecture name, None for a base or language-model class."""
  return next((head for head, suffix in SUFFIXES.items() if arch.endswith(suffix)), None)


def task_keys(hf: dict) -> dict:
  """config.model's task_head and num_labels from an HF config.json (labels from id2label)."""
  head = task_head((hf.get('architectures') or [''])[0])
  if head is None:
    return {'task_head': 'class', 'num_labels': 0}
  return {'task_head': head, 'num_labels': 0 if head == 'span' else len(hf.get('id2label') or {0: 0, 1: 1})}


def tag_names(hf: dict) -> str:
  """data.tag_names of a token-classification config.json ('' when its labels are not IOB2 tags)."""
  labels = [hf['id2label'][k] for k in sorted(hf.get('id2label') or {}, key=int)]
  iob2 = labels and all(t == 'O' or (t[:2] in ('B-', 'I-') and len(t) > 2) for t in labels)
  return ','.join(labels) if iob2 else ''


def architecture(model_name: str, m) -> str | None:
  """'<model_name>For<Task>' for a model with a task head (model.task_head 'span', or a 'class' / 'token' head of
  num_labels > 0), else None."""
  if m.task_head == 'span' or m.num_labels:
    return model_name + SUFFIXES[m.task_head]
  return None


def pretraining_heads(m) -> tuple[str, ...]:
  """Prefixes of the lm parameters that the task class of `m` has no place for: the pretraining heads (BERT's
  pooler stays for sequence classification, which reads it)."""
  return tuple(p for p in _PRETRAINING_HEADS if not (p == 'pooler/' and m.task_head == 'class'))


def label_config(m, names: str = '') -> dict:
  """The config.json entries of the head: id2label / label2id (tag names when given) and num_labels."""
  if m.task_head == 'span' or not m.num_labels:
    return {}
  labels = names.split(',') if names else [f'LABEL_{i}' for i in range(m.num_labels)]
  return {'id2label': {str(i): name for i, name in enumerate(labels)},
          'label2id': {name: i for i, name in enumerate(labels)}}


def head_rules(m, tensor_name: dict) -> list[rules.Rule]:
  """The rules of the model's task head; `tensor_name` maps a task head to the layout's HF tensor name."""
  if m.task_head != 'span' and not m.num_labels:
    return []
  return rules.linear(tensor_name[m.task_head], _HEAD_PARAMS[m.task_head], required=False)
