"""ftlab: the shared package of the LLM fine-tuning workbook.

Modules (import what you need; nothing heavy is imported here):

- ``ftlab.paths``      where the repository, data and caches live
- ``ftlab.profile``    hardware profiles (cpu, t4, a100) and their settings
- ``ftlab.tiny``       the offline tiny Llama model and its tokenizer
- ``ftlab.data``       JSONL loaders with schema validation
- ``ftlab.eval``       tone and fact scorers
- ``ftlab.memory``     training-memory estimator (also a command line)
- ``ftlab.plots``      plotting helpers shared by every lab
- ``ftlab.tracking``   experiment tracking (wandb offline by default)
- ``ftlab.notebooks``  build student labs from solutions, and check them
- ``ftlab.envcheck``   the environment report printed by lab 00
- ``ftlab.anatomy``    from-scratch Llama blocks, KV cache, power-law fits (labs 01-02)
- ``ftlab.pretraining`` tokenizer and pretraining measurements (lab 04)
- ``ftlab.curation``   deduplication and PII masking (lab 05)
- ``ftlab.sft``        SFT datasets, generation and scoring (labs 05, 08)
- ``ftlab.lora``       a LoRA layer by hand, merging (lab 06)
- ``ftlab.quant``      absmax, block-wise and NF4 quantization (lab 07)
- ``ftlab.experiments`` the LoRA/QLoRA experiment grid (lab 08)
- ``ftlab.stats``      paired significance tests: is A better than B? (labs 08, 11, grading)
- ``ftlab.accel``      the unsloth switch (``FTLAB_UNSLOTH``) and per-process model placement
- ``ftlab.bench``      peak memory, tokens/s and MFU of full/LoRA/QLoRA/unsloth vs ``ftlab.memory``
- ``ftlab.train``      SFT, LoRA and DPO as scripts, for one process or ``accelerate launch``
- ``ftlab.course``     the course repository URL (``[tool.ftlab]`` in pyproject.toml)
- ``ftlab.colab``      Colab badges and install cells generated from it
- ``ftlab.submission`` the assignment submission bundle (write, pack, verify its manifest)
- ``ftlab.rubric``     assignment rubrics: TOML source, generated Korean Markdown
- ``ftlab.sandbox``    confined re-execution of notebook cells (no network, time/memory/output limits)
- ``ftlab.grade``      the assignment grader (``python -m ftlab.grade``)
- ``ftlab.assignments`` assignment starter notebooks generated from the instructor copies
"""

__version__ = "0.1.0"
