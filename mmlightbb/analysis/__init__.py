"""What the backbones cost and how they compare: complexity counting, latency benchmark,
mAP-vs-speed comparison and the comparison pipeline of ``make demo``. Imports models, datasets
and engine; nothing below imports it."""
