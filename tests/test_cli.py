"""Every command as a user runs it (`python -m lm.<verb>`): a bad input is one `error:` line naming the flag or path,
exit 2, and nothing written. Fast: no command here compiles or trains anything."""
import os

import pytest

from runs import run_lm

CASES = [
    ('lm.main', ['--config=configs/no_such_config.py'], '--config=configs/no_such_config.py: no such file'),
    ('lm.main', ['--config=configs/gpt_tiny.py:test', '--coordinator_address=localhost:1'],
     'multi-process: give all of --coordinator_address'),
    ('lm.generate', ['--workdir={missing}', '--prompt=x'], '--workdir={missing}: no config.json there'),
    ('lm.generate', ['--workdir={missing}'], 'give --prompt=TEXT (repeatable) or --prompt_file=FILE'),
    ('lm.evaluate', ['--workdir={missing}', '--text_file={missing}/notes.txt'], 'notes.txt: no such file'),
    ('lm.fill_mask', ['--workdir={missing}', '--text=[MASK]'], '--workdir={missing}: no config.json there'),
    pytest.param('lm.answer', ['--workdir={missing}', '--question=q', '--context=c'],
                 '--workdir={missing}: no config.json there', marks=pytest.mark.slow),  # the fast tier is full
    pytest.param('lm.tag', ['--workdir={missing}', '--text=a b'], '--workdir={missing}: no config.json there',
                 marks=pytest.mark.slow),
    ('lm.convert', ['from_hf', '--hf_dir={missing}', '--workdir={missing}/out'], 'no config.json there'),
    pytest.param('lm.convert', ['to_peft', '--workdir={missing}', '--hf_dir={missing}/out'],
                 '--workdir={missing}: no config.json there', marks=pytest.mark.slow),
    pytest.param('lm.main', ['--config=configs/gpt_tiny_sft.py:lora'], 'model.lora_rank=8 needs init_from',
                 marks=pytest.mark.slow),
    ('lm.bench', ['--config=configs/bert_tiny.py:test', '--mode=decode'], "model.type='bert' does not generate text"),
    ('lm.aot', ['--config=configs/gpt_tiny.py:test', '--topology=v9x-8'], '--topology=v9x-8'),
    ('lm.prepare', ['--config=configs/gpt_tiny.py:test', '--config.data.store={missing}', '--workers=0'],
     '--workers=0: must be >= 1'),
]


@pytest.mark.parametrize('module, args, needle', CASES,
                         ids=[f'{getattr(c, "values", c)[0]}-{i}' for i, c in enumerate(CASES)])
def test_every_command_refuses_bad_input_in_one_line(module, args, needle, tmp_path):
  missing = str(tmp_path / 'missing')
  result = run_lm(*[a.format(missing=missing) for a in args], module=module, timeout=300)
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
  assert needle.format(missing=missing) in errors[0], errors[0]
  assert not os.path.exists(missing)  # nothing written
