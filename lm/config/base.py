"""Every config key of `lm`, with its default and one comment each (the schema).

Experiment files in configs/ start from `base.get_config()` (`from lm.config import base`) and change what they
need; `lm.config.validation.validate` checks any config against this one (no unknown keys, no wrong types), so a key
exists here or nowhere. Family presets (`bert`, `llama`, `bloom`, `opt`) are defined by the families' own modules.
"""
import itertools

import ml_collections

from lm.models import registry


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the base config (a small GPT on the embedded corpus)."""
  del arg
  c = ml_collections.ConfigDict()
  c.seed = 0  # seeds parameter init, dropout and data order
  c.nonfinite_policy = 'stop'  # NaN/Inf loss or gradients: 'stop' (exit 3, checkpoints kept) or 'skip' the update
  c.max_skipped_steps = 10  # nonfinite_policy='skip': stop after this many non-finite steps in a row
  c.num_train_steps = 1000  # optimizer updates in the whole run
  c.batch_size = 32  # GLOBAL batch size in sequences (all processes and devices together)
  c.seq_len = 256  # tokens per training sequence (<= model.max_len)
  c.grad_accum_steps = 1  # microbatches per optimizer update (batch_size must divide by it)
  c.log_every_steps = 10  # train metrics + progress line every N steps
  c.eval_every_steps = 100  # eval loss/perplexity every N steps (and at the end); 0 = only at the end
  c.eval_steps = 8  # eval batches per evaluation, the same every time (0 = the whole eval split, last batch padded)
  c.checkpoint_every_steps = 200  # orbax checkpoint every N steps (and at the end)
  c.keep_checkpoints = 3  # keep the last K checkpoints
  c.async_checkpoints = True  # write checkpoints in a background thread
  c.init_from = ''  # workdir of a pretrained run: load its matching parameters, fresh optimizer ('' = from scratch)
  c.best_metric = ''  # eval metric choosing the best checkpoint, kept in <workdir>/best ('' = none): eval/accuracy
  c.early_stopping_patience = 0  # stop after N evals without a new best best_metric (0 = never stop early)
  c.forgetting_every_steps = 0  # every N steps: init_from's pretraining objective -> eval/pretrain_loss (0 = off)
  c.forgetting_eval_steps = 4  # batches of init_from's eval data per forgetting evaluation
  c.objectives = ml_collections.ConfigDict({'clm': 1.0})  # objective name -> loss weight (see lm/objectives.py)
  c.num_samples = 0  # text samples generated from the final model at the end of training
  c.sample_max_new_tokens = 64  # length of each end-of-training sample
  c.sample_temperature = 0.8  # sampling temperature for those samples (0 = greedy)
  c.contrastive_temperature = 0.05  # softmax temperature of the 'contrastive' (SimCSE) objective
  c.generation_eval_examples = 0  # seq2seq: held-out sources decoded at each evaluation -> eval/bleu, eval/rouge*
  c.generation_num_beams = 1  # beams of those decodings (1 = greedy)
  c.generation_max_new_tokens = 0  # their length limit (0 = data.target_len, else seq_len)
  c.step_norms = True  # log train/grad_norm and train/param_norm (two reductions over the parameters per step)
  c.loss_chunk_size = 0  # clm objective: LM head + cross-entropy fused over vocabulary chunks of this many columns,
  # never holding the [tokens, vocab] logits whole (lm/chunked_cross_entropy.py; 0 = plain logits)
  c.z_loss = 0.0  # 'seq2seq' objective: + z_loss * log(Z)^2 per target token (PaLM / t5x use 1e-4; 0 = off)

  c.model = _model()  # network shape and numerics
  c.data = _data()  # corpus, tokenizer and input pipeline
  c.optimizer = _optimizer()  # optax chain and learning-rate schedule
  c.mesh = _mesh()  # device mesh (data, fsdp, tensor), product = device count; lm/parallel/sharding.py
  return c


def _model() -> ml_collections.ConfigDict:
  """config.model: network shape and numerics."""
  m = ml_collections.ConfigDict()
  m.type = registry.DEFAULT  # model family (lm/models/registry.py): gpt (causal decoder; llama() layout), bert
  # (encoder) or t5 (encoder-decoder; t5() layout)
  m.norm = 'pre'  # block layout: 'pre' (LN before attention/MLP, GPT-2) or 'post' (LN after the residual, BERT)
  m.activation = 'gelu_tanh'  # MLP: 'gelu_tanh' (GPT-2), 'gelu' (exact, BERT), 'swiglu' (gated SiLU, Llama),
  # 'geglu' (gated tanh-GELU, T5 v1.1) or 'relu' (T5 v1.0)
  m.norm_type = 'layernorm'  # normalisation layers: 'layernorm' (GPT-2, BERT) or 'rmsnorm' (Llama)
  m.use_bias = True  # biases in the attention and MLP projections (Llama has none)
  m.num_kv_heads = 0  # key/value heads for grouped-query attention (0 = num_heads; must divide num_heads)
  m.type_vocab_size = 0  # token-type (segment A/B) embeddings: 2 for BERT, 0 = none
  m.num_labels = 0  # classification / tagging head size (data.task classify or tag; 0 = from the data's labels)
  m.task_head = 'class'  # fine-tuning head: 'class' (per sequence), 'span' (QA start/end logits), 'token' (tags)
  m.num_layers = 4  # transformer blocks
  m.num_heads = 4  # attention heads
  m.head_dim = 0  # size of each attention head (0 = d_model // num_heads; T5.1.1 small: 512 = 6 heads x 64 + ...)
  m.num_decoder_layers = 0  # encoder-decoder (t5): decoder blocks (0 = num_layers, the encoder's)
  m.d_model = 256  # hidden size
  m.d_ff = 1024  # MLP hidden size
  m.vocab_size = 8192  # tokenizer (and embedding) vocabulary size
  m.max_len = 1024  # maximum sequence length (size of the learned position table)
  m.position = 'learned'  # position encoding: 'learned' (GPT-2), 'rope', 'relative' (T5's bias on the scores) or
  # 'alibi' (BLOOM: a per-head linear penalty on the key distance, no position parameters)
  m.position_offset = 0  # position='learned': table row of position 0 (OPT: 2); the table has max_len + this rows
  m.embedding_norm = False  # a LayerNorm right after the embeddings of a pre-LN model (BLOOM)
  m.rope_theta = 10000.0  # RoPE base frequency (position='rope' only)
  m.relative_attention_buckets = 32  # position='relative': buckets of the relative position bias (per stack)
  m.relative_attention_max_distance = 128  # position='relative': distances from this on share the last bucket
  m.dropout = 0.0  # dropout rate on embeddings, attention output and MLP output
  m.layer_norm_eps = 1e-5  # LayerNorm / RMSNorm epsilon
  m.tie_embeddings = True  # output projection shares the token embedding matrix
  m.dtype = 'float32'  # activation / compute dtype ('float32' or 'bfloat16')
  m.param_dtype = 'float32'  # parameter storage dtype
  m.attention_impl = 'einsum'  # 'einsum' (layers.einsum_attention); dot_product_attention's 'xla', 'cudnn', 'auto';
  # 'pallas_tpu' (the Pallas TPU flash-attention kernel, causal decoders on TPU; lm.aot compiles it anywhere)
  m.attention_block = 0  # 'einsum', causal: query block size (0 = max(64, seq_len / 8); >= seq_len: unblocked)
  m.projection_impl = 'auto'  # Dense and per-head projections: 'matmul' (one 2-D matmul over the flattened tokens;
  # on XLA:CPU ~6% faster train steps, no transposed copies), 'einsum' (contractions over [B, T, ...]; the same values
  # up to float rounding, ~1e-6; less TPU memory with loss_chunk_size) or 'auto' (matmul when lowered for a CPU,
  # einsum for TPU/GPU)
  m.lora_rank = 0  # LoRA (models/lora.py): adapters of this rank on the kernels lora_targets selects; only they
  # (and a task head) train, and checkpoints hold only them (0 = off: full fine-tuning)
  m.lora_alpha = 16.0  # LoRA: adapter output scale lora_alpha / lora_rank (PEFT's lora_alpha)
  m.lora_targets = r'(attn|cross)/(query|key|value|out)/kernel$'  # LoRA: regex searched in every kernel's path
  # ('block_0/attn/query/kernel', 'blocks/mlp/fc_in/kernel' when scanned); the default: the attention projections
  m.lora_dropout = 0.0  # LoRA: dropout on each adapter's input (training only)
  m.remat = 'none'  # rematerialise each block: 'none', 'full' or 'dots' (save matmul outputs); on XLA CPU it saves
  # memory only with scan_layers=True (WORKSPACE.md, Known gaps)
  m.scan_layers = False  # nn.scan over the blocks: one compiled block, faster compile for deep models
  return m


def _data() -> ml_collections.ConfigDict:
  """config.data: corpus, tokenizer and input pipeline."""
  d = ml_collections.ConfigDict()
  d.task = 'pretrain'  # 'pretrain' (documents), 'classify' (text[, text_b], label), 'sft' (instruction JSONL),
  # 'seq2seq' ((source, target) pairs for an encoder-decoder: translation, summarization; lm/data/seq2seq.py),
  # 'qa' (extractive question answering, SQuAD; lm/data/qa.py) or 'tag' (token classification; lm/data/tagging.py)
  d.source = 'embedded'  # 'embedded' (stdlib text; see WORKSPACE.md), 'text', 'jsonl', 'csv', 'parquet', 'tfds' or
  # 'gettext' (seq2seq: .mo catalogs in data.path, English msgid -> translation)
  d.path = ''  # files or globs for 'text' / 'jsonl' / 'parquet', comma-separated; local or gs://, plain, .gz or .zst
  d.text_key = 'text'  # field holding the text in 'jsonl'/'csv' records and tfds examples
  d.text_b_key = ''  # classify: field of the second text of a pair, e.g. 'hypothesis' ('' = single texts)
  d.label_key = 'label'  # classify: field of the label (integer, or strings mapped to ids in sorted order)
  d.source_key = 'source'  # seq2seq: field of the source text (jsonl/csv/tfds; wmt14_translate/de-en: 'de')
  d.target_key = 'target'  # seq2seq: field of the target text (wmt14_translate/de-en: 'en'; cnn_dailymail: highlights)
  d.task_prefix = ''  # seq2seq: text put before every source, e.g. 'translate German to English: ', 'summarize: '
  d.split_identifiers = False  # seq2seq: write a source's compound identifiers as words ('get_size' -> 'get size')
  d.code_packages = ''  # seq2seq 'embedded' (code summarization): installed packages, comma-separated import names
  # (e.g. 'numpy,jax'), whose functions join the TRAINING split; eval stays the standard library's held-out files
  d.code_target = 'docstring'  # seq2seq 'embedded': what each function's example asks for: 'docstring' (the first
  # sentence of its docstring: code summarization) or 'name' (its name as words, which the source holds: a copying
  # warm-up for the decoder, configs/t5_tiny_summarize_code.py:names)
  d.target_len = 0  # encoder-decoder: decoder tokens per example (0 = span corruption's length for seq_len inputs,
  # or seq_len for seq2seq); longer seq2seq targets are truncated (eos kept) and counted
  d.noise_density = 0.15  # span corruption (t5 pretraining): fraction of the tokens corrupted
  d.mean_noise_span_length = 3.0  # span corruption: mean length of a corrupted span
  d.span_targets = 'sentinels'  # span corruption's decoder targets: 'sentinels' (T5: each sentinel and its span) or
  # 'original' (the whole uncorrupted chunk, the T5 paper's "reconstruct the original text": the decoder learns to copy)
  d.num_sentinels = 0  # sentinel ids <extra_id_k> = vocab_size-1-k at the top of the tokenizer (t5 preset: 100)
  d.doc_stride = 128  # qa: tokens shared by consecutive windows of a long context (Hugging Face's stride)
  d.max_query_len = 64  # qa: question tokens kept (longer questions are cut and counted)
  d.max_answer_len = 30  # qa: longest answer span predicted, in tokens
  d.n_best = 20  # qa: start and end candidates per window combined into answer spans
  d.allow_null = False  # qa: may answer "no answer" (SQuAD v2) when the null score beats the best span
  d.null_threshold = 0.0  # qa: answer nothing when null score - best span score > this (allow_null only)
  d.tag_names = ''  # tag: the tag set, comma-separated IOB2 ('O,B-PER,I-PER,...'; '' = from the data)
  d.label_all_subtokens = False  # tag: label every sub-token of a word (later ones as I-), not only the first
  d.eval_path = ''  # classify/sft: jsonl/csv file(s) of the eval split ('' = hold out eval_fraction of data.path)
  d.tfds_name = ''  # tfds dataset name for source='tfds', e.g. 'lm1b' or 'wikipedia/20230601.en'
  d.tfds_data_dir = ''  # tfds data_dir ('' = TFDS_DATA_DIR or ~/tensorflow_datasets)
  d.train_split = 'train'  # tfds split used for training
  d.eval_split = 'test'  # tfds split used for eval ('' = hold out eval_fraction of train documents)
  d.eval_fraction = 0.05  # fraction of documents held out for eval when the source has no eval split
  d.max_documents = 0  # use only the first N documents of each split (0 = all)
  d.packing = 'packed'  # 'packed': no attention across documents (segment ids); 'concat': plain concatenation
  d.shuffle = True  # shuffle training sequences (reshuffled every epoch, deterministic in seed)
  d.cache_dir = ''  # tokenizer + token cache ('' = $LM_CACHE_DIR or ~/.cache/lm)
  d.tokenizer = ''  # path to an existing SentencePiece .model ('' = train one on the training split)
  d.tokenizer_type = 'bpe'  # SentencePiece model type when training one: 'bpe' or 'unigram'
  d.tokenizer_sentences = 300000  # lines sampled from the corpus to train the tokenizer
  d.tokenizer_sample_bytes = 100_000_000  # train the tokenizer on every k-th document, about this much text (0 = all)
  d.store = ''  # token store directory (lm.prepare writes it; '' = a cache entry keyed by documents + tokenizer)
  d.mixture = ml_collections.ConfigDict()  # pretrain on several sources by weight: {name: {weight, data keys}}, see
  # lm/data/mixture.py; empty = the one source above. Eval reports eval/<name>/* per source and eval/* pooled
  d.store_shard_documents = 10000  # documents per token-store shard (the unit of parallel, resumable preparation)
  d.mask_prob = 0.15  # BERT examples: fraction of maskable tokens chosen for MLM (80% [MASK] / 10% random / 10% kept)
  d.max_predictions_per_seq = 20  # BERT examples: cap on MLM predictions per sequence (gathered positions)
  d.whole_word_mask = False  # BERT examples: choose whole words (all pieces of a word) rather than single pieces
  d.nsp_random_prob = 0.5  # BERT examples: probability that segment B is a random segment (NSP label 1)
  d.short_seq_prob = 0.1  # BERT examples: probability of a shorter random target length, as in BERT
  d.num_threads = 2  # grain read threads per process
  d.prefetch = 4  # batches prefetched per process
  return d


def _optimizer() -> ml_collections.ConfigDict:
  """config.optimizer: optax chain and learning-rate schedule."""
  o = ml_collections.ConfigDict()
  o.name = 'adamw'  # optimizer: 'adamw', or 'adafactor' (T5's: relative steps, factored moments; lm/training/optim.py)
  o.learning_rate = 1e-3  # peak learning rate
  o.schedule = 'cosine'  # after warmup: 'cosine', 'linear' (to min) or 'constant'
  o.warmup_steps = 100  # linear warmup from 0 to the peak
  o.min_lr_ratio = 0.1  # final learning rate as a fraction of the peak (cosine / linear)
  o.b1 = 0.9  # Adam beta1
  o.b2 = 0.95  # Adam beta2
  o.eps = 1e-8  # Adam epsilon
  o.adafactor_decay_rate = 0.8  # Adafactor: second-moment decay, beta2_t = 1 - t^-rate (t5x's default)
  o.weight_decay = 0.1  # decoupled weight decay; applied to kernels only (not biases, norms, embeddings)
  o.grad_clip_norm = 1.0  # clip gradients to this global norm (0 = off)
  o.layer_decay = 1.0  # layer-wise LR decay: block i of L gets lr * layer_decay**(L - i), embeddings **(L+1) (1 = off)
  o.freeze_embeddings = False  # no update (and no optimizer state) for the embedding tables
  o.freeze_layers = 0  # freeze the first K transformer blocks
  o.freeze_all_but_head = False  # train only the task head (classification head; linear probing)
  o.freeze_patterns = ''  # comma-separated regexes: parameters whose path (block_0/attn/query/kernel) matches freeze
  return o


def _mesh() -> ml_collections.ConfigDict:
  """config.mesh: device mesh (data, fsdp, tensor), product = device count; parallel/."""
  ms = ml_collections.ConfigDict()
  ms.data = -1  # data-parallel axis size (-1 = all devices left over)
  ms.fsdp = 1  # fully-sharded data-parallel axis size (parameters + optimizer state sharded)
  ms.tensor = 1  # tensor-parallel axis size (heads / mlp / vocab sharded)
  ms.dcn_data = 1  # data parallelism across TPU slices (or GPU/CPU hosts) over the data-center network; data*= this
  ms.rules = mr = ml_collections.ConfigDict()  # logical axis -> comma-separated mesh axes ('' = replicated)
  mr.length = ''  # sequence dimension of activations
  mr.embed = 'fsdp'  # d_model dimension (parameters; activations whose batch took fsdp keep it whole)
  mr.mlp = 'tensor'  # d_ff dimension
  mr.heads = 'tensor'  # attention heads
  mr.kv = ''  # per-head dimension
  mr.vocab = 'tensor'  # vocabulary dimension of embeddings and logits
  mr.layers = ''  # the stacked-layer dimension of scanned blocks (model.scan_layers)
  return ms


def bert(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Turns `c` into an original-BERT-style encoder run (MLM + NSP); shapes and schedule stay the caller's."""
  from lm.models import encoder
  return encoder.preset(c)


# Fine-tuning learning-rate presets (peak LR); `finetune(c, preset)` applies one. 'base' is the BERT paper's middle
# value for base-size models; the few-million-parameter tiny models, briefly pretrained, want 'tiny'.
FINETUNE_PRESETS = {'gentle': 1e-5, 'base': 2e-5, 'fast': 1e-4, 'tiny': 1e-3}


def finetune(c: ml_collections.ConfigDict, preset: str = 'base') -> ml_collections.ConfigDict:
  """Turns `c` into a fine-tuning run: a small peak LR from FINETUNE_PRESETS, 10% warmup, linear decay to 0,
  Adam b2 0.999, weight decay 0.01, frequent evals. 'probe' = linear probing: only the head trains, at 1e-3."""
  if preset == 'probe':
    c.optimizer.learning_rate, c.optimizer.freeze_all_but_head = 1e-3, True
  elif preset in FINETUNE_PRESETS:
    c.optimizer.learning_rate = FINETUNE_PRESETS[preset]
  else:
    raise ValueError(f'unknown fine-tuning preset {preset!r}; choose from {sorted(FINETUNE_PRESETS) + ["probe"]}')
  c.optimizer.warmup_steps = max(1, c.num_train_steps // 10)
  c.optimizer.schedule, c.optimizer.min_lr_ratio = 'linear', 0.0
  c.optimizer.b2, c.optimizer.weight_decay = 0.999, 0.01
  return c


def classify(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Turns `c` into a sequence-classification run on the offline STDLIB_PACKAGES task (see
  lm/data/classification.py), evaluated on the whole held-out split, best checkpoint by eval/accuracy."""
  c.data.task, c.data.source = 'classify', 'embedded'
  c.objectives = {'classify': 1.0}
  c.data.eval_fraction = 0.2  # of the files: enough of each package for a steady accuracy
  c.eval_steps = 0  # the whole held-out split
  c.best_metric = 'eval/accuracy'
  return c


def qa(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Turns `c` into an extractive question-answering run (SQuAD's span head and metrics; lm/data/qa.py): the
  whole eval split, best checkpoint by eval/f1."""
  c.data.task, c.model.task_head, c.objectives = 'qa', 'span', {'span': 1.0}
  c.eval_steps = 0
  c.best_metric = 'eval/f1'
  return c


def tag(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Turns `c` into a token-classification run (a tag per word; lm/data/tagging.py): the whole eval split, best
  checkpoint by eval/entity_f1."""
  c.data.task, c.model.task_head, c.objectives = 'tag', 'token', {'tag': 1.0}
  c.eval_steps = 0
  c.best_metric = 'eval/entity_f1'
  return c


def t5(c: ml_collections.ConfigDict, version: str = '1.1') -> ml_collections.ConfigDict:
  """Turns `c` into a T5 encoder-decoder: version '1.1' (gated GELU, untied head) or '1.0' (ReLU, tied head)."""
  from lm.models import t5 as t5_family
  return t5_family.preset(c, version)


def llama(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Turns `c` into a Llama-style decoder: RMSNorm, RoPE, SwiGLU MLP, no biases, untied output head."""
  from lm.models import decoder
  return decoder.llama_preset(c)


def bloom(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Turns `c` into a BLOOM-style decoder: ALiBi, embedding LayerNorm, tanh GELU, 4·d MLP, biases, tied head."""
  from lm.models import decoder
  return decoder.bloom_preset(c)


def opt(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Turns `c` into an OPT-style decoder: learned positions offset by 2, ReLU, biases, final LayerNorm, tied head."""
  from lm.models import decoder
  return decoder.opt_preset(c)


def sweep_product(axes: dict) -> list[dict]:
  """Every combination: {'optimizer.learning_rate': (1e-3, 2e-3), 'seed': (0, 1)} -> 4 override dicts."""
  keys = list(axes)
  return [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]


def sweep_zip(axes: dict) -> list[dict]:
  """Values side by side: {'model.d_model': (128, 256), 'model.num_heads': (2, 4)} -> 2 override dicts."""
  keys = list(axes)
  lengths = {len(axes[k]) for k in keys}
  if len(lengths) > 1:
    raise ValueError(f'sweep_zip: the value lists have different lengths {sorted(lengths)}')
  return [dict(zip(keys, values)) for values in zip(*(axes[k] for k in keys))]
