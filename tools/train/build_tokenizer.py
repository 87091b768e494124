"""The default models' tokenizer: a Llama-3-style byte-level BPE (4096 ids, the 5 special tokens last)
trained on our corpus, its chat template, and the tokenizer.json / tokenizer_config.json files."""
import json
import os



VOCAB_SIZE = 4096
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
BOS, EOT_TEXT, START_HEADER, END_HEADER, EOT = SPECIAL_TOKENS
# formats.md §9.2: the Llama 3 pre-tokenizer split (digits in groups of up to three).
LLAMA3_SPLIT_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                      r"\s*[\r\n]+|\s+(?!\S)|\s+")

# Llama 3 shape; the template emits the BOS itself, so rendered text is tokenized without special tokens.
CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- for message in messages %}\n"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)


def render_chat(messages, add_generation_prompt=False, bos=True):
    """What CHAT_TEMPLATE renders (checked against Jinja in the pipeline); bos=False drops the leading BOS."""
    out = [BOS] if bos else []
    for m in messages:
        out.append(f"{START_HEADER}{m['role']}{END_HEADER}\n\n{m['content']}{EOT}")
    if add_generation_prompt:
        out.append(f"{START_HEADER}assistant{END_HEADER}\n\n")
    return "".join(out)


def sample_text(sample):
    """A corpus sample as a training document: chat through the template, plain text between BOS and EOS."""
    if sample["kind"] == "chat":
        return render_chat(sample["messages"])
    return BOS + sample["text"] + EOT_TEXT


def sample_plain(sample):
    """A sample's text without special tokens, what the BPE merges are learnt from."""
    if sample["kind"] == "chat":
        return "".join(f"{m['role']}\n\n{m['content']}" for m in sample["messages"])
    return sample["text"]


def train_tokenizer(texts, vocab_size=VOCAB_SIZE):
    """Byte-level BPE with the Llama 3 pipeline; merges learnt first, the special tokens appended after them
    (ids vocab_size-5 .. vocab_size-1), as Llama 3 puts its specials after the merged vocabulary."""
    # Imported here so the text helpers above work without the tokenizers package (tools/train/heldout_text.py).
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(SPECIAL_TOKENS), min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(texts, trainer=trainer)
    n = tok.get_vocab_size()
    if n != vocab_size - len(SPECIAL_TOKENS):
        raise RuntimeError(f"BPE training produced {n} tokens, wanted {vocab_size - len(SPECIAL_TOKENS)}: corpus too small")
    tok.add_special_tokens(SPECIAL_TOKENS)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A:0 {BOS}:1 $B:1",
                                      special_tokens=[(BOS, bos_id)]),
    ])
    # Round-trip through JSON so the saved file is exactly what we check (ignore_merges kept as Llama 3 has it).
    spec = json.loads(tok.to_str())
    spec["model"]["ignore_merges"] = True
    tok = Tokenizer.from_str(json.dumps(spec))
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(vocab_size - len(SPECIAL_TOKENS), vocab_size)), ids
    return tok


def special_ids(tok):
    return {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}


def tokenizer_config(tok, model_max_length=2048):
    ids = special_ids(tok)
    return {
        "added_tokens_decoder": {str(ids[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                               "single_word": False, "special": True} for t in SPECIAL_TOKENS},
        "bos_token": BOS,
        "eos_token": EOT,
        "pad_token": EOT_TEXT,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": model_max_length,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    }


def write_tokenizer(tok, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"), pretty=False)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(tok), f, indent=2)
        f.write("\n")


def check_chat_template():
    """The Jinja template renders exactly what render_chat builds."""
    import jinja2
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    tpl = env.from_string(CHAT_TEMPLATE)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi\nthere"},
            {"role": "assistant", "content": " ok "}]
    for gen in (False, True):
        got = tpl.render(messages=msgs, add_generation_prompt=gen, bos_token=BOS)
        assert got == render_chat(msgs, gen), (got, render_chat(msgs, gen))
