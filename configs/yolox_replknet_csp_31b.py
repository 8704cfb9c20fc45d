# YOLOX with RepLKNet-31B in Cross-Stage-Partial stages (arch 'csp-31B': the shared CSP stage of
# CSPConvNeXt around 31B's RepLK blocks and ConvFFNs) on side-scan sonar (data/sonar/); the CSP half
# of the plain/CSP pair that benchmarks/csp_thesis.py measures against configs/yolox_replknet.py.
# No published weights exist for the CSP form: it trains from scratch.
_base_ = ['./yolox_replknet.py']
model = dict(backbone=dict(arch='csp-31B', init_cfg=None))
