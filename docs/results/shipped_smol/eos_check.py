# The shipped adapter's next token after the letter peft_check.py wrote (run after it, from the repository root,
# with its output in /tmp/peft_check.log): the token it learned to end a letter with, against the base tokenizer's EOS.
import json, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from covertune import models
from covertune.prompt import prompt_ids
base_dir = models.resolve_model("embedded")
tok = AutoTokenizer.from_pretrained(base_dir)
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                                  "src/covertune/shipped/smol").eval()
row = json.loads(open("runs/shipped_smol/data/test.jsonl").readline())
letter = open("/tmp/peft_check.log").read().split("new tokens in")[1].split("\n", 1)[1].split("\nassistant\n")[0]
ids = prompt_ids(row, tok, "raw") + tok(letter, add_special_tokens=False)["input_ids"]
with torch.no_grad():
    logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
p = logits.softmax(-1)
top = p.topk(5)
print("base tokenizer eos:", tok.eos_token, tok.eos_token_id)
print("next token after the letter:", [(tok.convert_ids_to_tokens(int(i)), int(i), round(float(v), 3)) for v, i in zip(top.values, top.indices)])
