from setuptools import find_packages, setup


def read_version():
    scope = {}
    with open('mmlightbb/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='mmlightbb',
    version=read_version(),
    description='Lightweight and large-kernel CNN backbones for MMDetection 3.x, '
    'with tools that measure what they really cost',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmlightbb', 'mmlightbb.*']),
    python_requires='>=3.9',
    # torch and mmcv are installed by `make install` (tools/install.sh): mmcv 2.1.0 must be built
    # from source against the installed torch, which pip's dependency resolver cannot express.
    install_requires=['mmengine==0.10.7', 'mmdet==3.3.0', 'pycocotools', 'matplotlib', 'numpy'],
    # ImageNet pre-training (configs/imagenet/): mmpretrain, which also needs a torchvision built
    # for the installed torch (tools/install.sh picks it; pip cannot express that either)
    extras_require={'pretrain': ['mmpretrain==1.2.0'],
                    # tools/export.py (--precision int8: nncf), tools/benchmark.py --backend
                    'export': ['onnx', 'onnxruntime', 'openvino', 'nncf']},
    license='Apache-2.0',
)
