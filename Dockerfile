# GPU target image: NVIDIA's PyTorch container already ships CUDA, cuDNN and TensorRT.
# Build: docker build -t cakd .      Run the pipeline: docker run --gpus all -v $PWD/artifacts:/cakd/artifacts cakd
# Any command:  docker run --gpus all cakd cakd export --format trt
FROM nvcr.io/nvidia/pytorch:25.01-py3

WORKDIR /cakd
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY export ./export
# torch and tensorrt come from the base image; pip keeps them and adds the rest of cakd[trt].
RUN pip install --no-cache-dir -e ".[trt]"
COPY params.yaml dvc.yaml ./
COPY .dvc/config ./.dvc/config
# No git inside the image: DVC runs the pipeline without it.
RUN dvc config --local core.no_scm true

CMD ["dvc", "repro"]
