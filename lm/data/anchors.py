"""Random-access anchors over a token stream: what grain's random_map turns into examples (BERT sentence pairs,
T5 span corruption). Anchor i is the stream offset i * stride; an epoch covers the stream about once."""


class StreamAnchors:
  """`anchors[i]` = i * stride for i in [0, len(tokens) // stride); negative i counts from the end. Subclasses set
  `tokens` (1-D ids supporting slicing) and define `stride` and `make_example(anchor, rng)`."""
  tokens = None

  @property
  def stride(self) -> int:
    """Stream tokens per anchor."""
    raise NotImplementedError

  def __len__(self) -> int:
    return len(self.tokens) // self.stride

  @property
  def num_tokens(self) -> int:
    return len(self.tokens)

  def __getitem__(self, i: int) -> int:
    n = len(self)
    i = int(i)
    if not -n <= i < n:
      raise IndexError(f'anchor {i} out of range for {n} anchors')
    return (i % n) * self.stride
