# The shipped bf16 adapter on the embedded base with peft on the CPU: loads it and writes one letter (greedy).
# Run from the repository root after `covertune run`'s data stage wrote runs/shipped_smol/data/test.jsonl:
#   python docs/results/shipped_smol/peft_check.py
import json, time, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from covertune import models
from covertune.prompt import extract_letter, prompt_ids

base_dir = models.resolve_model("embedded")
tok = AutoTokenizer.from_pretrained(base_dir)
base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)  # fp32: peft casts the bf16 adapter to it
print("vocab", len(tok), "embeddings", base.get_input_embeddings().num_embeddings)
model = PeftModel.from_pretrained(base, "src/covertune/shipped/smol").eval()
lora = [n for n, p in model.named_parameters() if "lora_" in n]
print("lora tensors", len(lora), "dtype", {str(p.dtype) for n, p in model.named_parameters() if "lora_" in n})
rows = [json.loads(l) for l in open("runs/shipped_smol/data/test.jsonl")]
row = next(r for r in rows if len(r.get("job_description", r.get("preferred_qualifications", ""))) > 200)
ids = torch.tensor([prompt_ids(row, tok, "raw")])
t = time.time()
with torch.no_grad():
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=512, do_sample=False,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
letter = extract_letter(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
print(f"row {row['id']}: {row['job_title'].strip()} at {row['hiring_company']}, applicant {row['applicant_name']}; "
      f"{out.shape[1] - ids.shape[1]} new tokens in {time.time() - t:.1f} s")
print(letter)
