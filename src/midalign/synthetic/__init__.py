"""The synthetic multilingual world used by the demo, the benchmarks and the tests (see docs/synthetic-world.md).

- `midalign.synthetic.world`: `build_world(config, out_dir)`, which writes the pretraining corpus, the slot-filling
  task data, the alignment pairs and a held-out multi-way set, from its parts: `words` (concepts, slot values,
  command templates), `scripts` (spelling), `languages` and `meanings` (the `World` that samples and renders);
- `midalign.synthetic.pretrain`: a character-level BPE tokenizer and a tiny Llama pretrained on the corpus
  (cached by config and corpus);
- `midalign.synthetic.probe`: what the base model can do: held-out loss, copying, layer-wise retrieval.

Nothing is re-exported here: `pretrain` is both a module and its main function.
"""
