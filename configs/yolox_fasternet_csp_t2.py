# YOLOX with FasterNet-T2 in Cross-Stage-Partial stages (arch 'csp-t2': the shared CSP stage of
# CSPConvNeXt around T2's blocks) on side-scan sonar (data/sonar/); the CSP half of the plain/CSP
# pair that benchmarks/csp_thesis.py measures against configs/yolox_fasternet.py. No published
# weights exist for the CSP form: it trains from scratch.
_base_ = ['./yolox_fasternet.py']
model = dict(backbone=dict(arch='csp-t2', init_cfg=None))
