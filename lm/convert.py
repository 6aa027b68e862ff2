"""Import and export Hugging Face checkpoints (GPT-2, BERT, Llama family) as lm workdirs, from local directories.

  python -m lm.convert from_hf --hf_dir=DIR --workdir=OUT [--dtype=bfloat16]
  python -m lm.convert to_hf --workdir=DIR --hf_dir=OUT [--merge_lora]
  python -m lm.convert to_peft --workdir=DIR --hf_dir=OUT      # a LoRA run's adapters, for peft

from_hf reads DIR's config.json, model.safetensors (or the shards of model.safetensors.index.json; never a pickle)
and tokenizer files, and writes a normal workdir: config.json, tokenizer.json + tokenizer_config.json,
checkpoints/0 (the parameters). lm.generate, lm.evaluate and `lm.main --config.init_from=OUT` work on it. Every HF
tensor must map to an lm parameter of the same shape (else one error naming it); heads a checkpoint may lack (BERT's
pooler, MLM and NSP heads) keep a fresh init and are listed. to_hf writes config.json, model.safetensors and the
tokenizer so that transformers' Auto classes load it; a LoRA run (model.lora_rank) exports with --merge_lora (the
adapters folded into the weights) or as PEFT adapters (to_peft: adapter_model.safetensors + adapter_config.json,
for `peft.PeftModel.from_pretrained(<the to_hf export of its init_from>, OUT)`). Library: lm/hf/convert.py;
mappings: lm/hf/architectures.py.
"""
import json

from absl import app, flags

from lm import cli

_HF_DIR = flags.DEFINE_string('hf_dir', None, 'Hugging Face model directory (read by from_hf, written by to_hf).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'lm workdir (written by from_hf, read by to_hf).')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'from_hf: parameter and compute dtype.')
_STEP = flags.DEFINE_integer('step', None, 'to_hf / to_peft: checkpoint step (default: the latest).')
_MERGE_LORA = flags.DEFINE_bool('merge_lora', False, 'to_hf of a LoRA run: fold the adapters into the weights.')
_COMMANDS = ('from_hf', 'to_hf', 'to_peft')


def main(argv):
  if len(argv) != 2 or argv[1] not in _COMMANDS:
    raise app.UsageError('usage: lm.convert from_hf --hf_dir=DIR --workdir=OUT | to_hf --workdir=DIR --hf_dir=OUT '
                         '[--merge_lora] | to_peft --workdir=DIR --hf_dir=OUT')
  if not _HF_DIR.value or not _WORKDIR.value:
    raise app.UsageError('give --hf_dir and --workdir')
  cli.quiet_logs()
  from lm.errors import LmError
  from lm.hf import convert
  try:
    if argv[1] == 'from_hf':
      summary = convert.from_hf(_HF_DIR.value, _WORKDIR.value, _DTYPE.value)
    elif argv[1] == 'to_hf':
      summary = convert.to_hf(_WORKDIR.value, _HF_DIR.value, _STEP.value, _MERGE_LORA.value)
    else:
      summary = convert.to_peft(_WORKDIR.value, _HF_DIR.value, _STEP.value)
  except LmError as e:
    cli.fail(e)
  print(json.dumps(summary), flush=True)


def run():
  """Console entry point."""
  app.run(main, flags_parser=cli.parse_flags)


if __name__ == '__main__':
  run()
