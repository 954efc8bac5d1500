"""ftlab.distill: the layer-subset student and the soft-label loss."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ftlab import distill


def _teacher():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def test_layer_student_copies_the_kept_layers():
    teacher = _teacher()
    student = distill.layer_student(teacher, keep=(0, 3))
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight)
    assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()  # still tied
    assert distill.count_parameters(student) < distill.count_parameters(teacher)
    full = distill.layer_student(teacher, keep=(0, 1, 2, 3))
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        torch.testing.assert_close(full(ids).logits, teacher(ids).logits)


def test_soft_label_loss_basics():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    labels = torch.tensor([[-100, 1, 2], [3, 4, -100]])
    assert float(distill.soft_label_loss(t, t, labels, 2.0)) < 1e-6
    assert float(distill.soft_label_loss(s, t, labels, 2.0)) > 0
    # at T = 1 with a one-hot teacher the soft-label loss is the cross-entropy
    onehot = torch.full_like(t, -1e4).scatter(-1, labels.clamp(min=0).unsqueeze(-1), 0.0)
    torch.testing.assert_close(distill.soft_label_loss(s, onehot, labels, 1.0), distill.hard_label_loss(s, labels))


def test_train_student_lowers_its_loss():
    teacher = _teacher()

    class Tok:
        pad_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1 + (ord(c) % 60) for c in text]}

    pairs = [{"prompt": f"q{i}:", "completion": "abcab"[i % 3:] + "d"} for i in range(8)]
    for temperature in (None, 2.0):
        student = distill.layer_student(teacher, keep=(0,))
        log = distill.train_student(student, teacher, Tok(), pairs, steps=8, temperature=temperature,
                                    learning_rate=1e-2, batch_size=4)
        assert len(log["loss"]) == 8 and log["loss"][-1] < log["loss"][0]


def test_teacher_targets_soften_with_temperature():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 9) * 4
    labels = logits.argmax(-1)
    cold, warm = distill.teacher_targets(logits, labels, 1.0), distill.teacher_targets(logits, labels, 4.0)
    assert 0 < warm["p_reference"] < cold["p_reference"] <= 1 and warm["entropy"] > cold["entropy"]


def test_student_generates_like_its_teacher():
    teacher = _teacher()
    teacher.generation_config.use_cache = True
    student = distill.layer_student(teacher, keep=(1, 2))
    assert student.generation_config.use_cache and student.generation_config is not teacher.generation_config
