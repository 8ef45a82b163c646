from setuptools import setup

from transpiler.build_setuptools import build_py

setup(packages=["legacy_sample"], cmdclass={"build_py": build_py})
