"""The distillation recipe: each stage loads what the previous ones wrote and writes its part of
the model directory (`cfg.out`):

    vae           -> out/vae/            (shapes only; Wan: the model folder's VAE)
    vae-decoder   -> out/vae/            (shapes only, optional: decoder fine-tuned on long clips)
    teacher       -> out/teacher/        (shapes only; Wan: the model folder's transformer)
    ode-pairs     -> work/ode-pairs/batch-*.safetensors (one shard per batch, each rank writes its own)
    ode-init      -> out/transformer/    (the ODE-initialised causal student)
    self-forcing  -> out/transformer/    (the Self-Forcing student, EMA weights)
                     or, with self_forcing.lora.rank > 0, out/lora/ (the student's PEFT adapter, EMA;
                     transformer/ untouched: serve with `--lora out/lora`)

plus out/framecast.json after every stage. Resumable state, logs and intermediate data live in
`cfg.work_dir/<stage>/`; `work_dir/summary.json` collects each stage's steps, wall time and losses.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from distill.config import STAGES, DistillConfig
from distill.errors import DistillError
from distill.parallel import barrier, init_distributed, is_main_process, launched, rank, rank_seed, world_size
from distill.trainer import Trainer
from models.config import ModelConfig, TransformerConfig
from models.model_dir import random_transformer, save_model_dir
from models.schedule import FlowMatchSchedule
from models.transformer import CausalWanTransformer
from models.vae import VideoVAE


class StageError(DistillError):
    """A stage cannot run with this recipe (e.g. a missing earlier stage)."""


class Pipeline:
    def __init__(self, cfg: DistillConfig, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.device = torch.device(cfg.device)
        if launched():
            self.device = init_distributed(self.device)
        self.out = Path(cfg.out)
        self.work = Path(cfg.work_dir)
        self.model_cfg = self._base_model_config()
        self._text = None

    # ------------------------------------------------------------------ config and loaders
    def _base_model_config(self) -> ModelConfig:
        cfg = self.cfg
        if cfg.model_dir is not None and not (Path(cfg.model_dir) / "framecast.json").exists():
            # a plain diffusers Wan folder: the preset's streaming settings, the folder's transformer dims, umT5
            from models.config import apply_overrides, preset

            base = preset(cfg.model)
            tcfg = TransformerConfig.from_dict(json.loads((Path(cfg.model_dir) / "transformer" / "config.json").read_text()))
            text = dataclasses.replace(base.text_encoder, kind="umt5", dim=tcfg.text_dim)
            base = dataclasses.replace(base, transformer=tcfg, text_encoder=text)
            base = apply_overrides(base, cfg.overrides) if cfg.overrides else base
            return dataclasses.replace(base, name=cfg.name).validate()
        model_cfg = cfg.model_config()
        vae_json = self.out / "vae" / "config.json"
        if cfg.model_dir is None and vae_json.exists():  # a trained VAE carries its latent statistics
            from models.config import VAEConfig

            model_cfg = dataclasses.replace(model_cfg, vae=VAEConfig.from_dict(json.loads(vae_json.read_text())))
        # an avatar always starts from its face image, whichever stage writes framecast.json
        return dataclasses.replace(model_cfg, supports_image=model_cfg.audio is not None or self._trained_with_images())

    def _trained_with_images(self) -> bool:
        """Whether the student was trained with start-image rollouts: out/framecast.json says so, or, when
        fine-tuning a framecast model directory (`model_dir`), that directory's."""
        folders = [self.out] + ([Path(self.cfg.model_dir)] if self.cfg.model_dir else [])
        for path in (folder / "framecast.json" for folder in folders):
            if path.exists() and json.loads(path.read_text()).get("supports_image", False):
                return True
        return False

    @property
    def source_dir(self) -> Path:
        """Where the VAE and teacher come from: the Wan folder, else the output directory."""
        return Path(self.cfg.model_dir) if self.cfg.model_dir else self.out

    def text_encoder(self):
        if self._text is None:
            from models.text_encoders import build_text_encoder

            where = self.cfg.parallel.text_encoder_device or self.device  # e.g. "cpu": off the GPU (prompt states are cached)
            self._text = build_text_encoder(self.model_cfg.text_encoder, self.cfg.model_dir, where)
        return self._text

    def load_vae(self) -> VideoVAE:
        path = self.source_dir / "vae"
        if not (path / "config.json").exists():
            raise StageError(f"no VAE at {path}: run the `vae` stage first")
        vae = VideoVAE.from_pretrained(path).to(self.device).eval()
        self.model_cfg = dataclasses.replace(self.model_cfg, vae=vae.cfg)
        return vae

    def load_transformer(self, which: str) -> CausalWanTransformer:
        # a framecast model directory (e.g. a released student to fine-tune) brings its teacher/; a Wan folder's transformer is the teacher
        own_teacher = (self.source_dir / "teacher" / "config.json").exists()
        folder = {"teacher": "transformer" if self.cfg.model_dir and not own_teacher else "teacher", "student": "transformer"}[which]
        if which == "student" and self.cfg.model_dir:
            path = self.out / "transformer"
        else:
            path = self.source_dir / folder
        if not (path / "config.json").exists():
            need = {"teacher": "teacher", "student": "ode-init"}[which]
            raise StageError(f"no {which} at {path}: run the `{need}` stage first")
        model = CausalWanTransformer.from_pretrained(path, device=self.device).float()
        want = self.model_cfg.transformer.prediction
        if model.config.prediction != want:  # a student exported into the recipe's config would mean another thing
            raise StageError(f"{path} draws {model.config.prediction!r} (transformer `prediction`), this recipe {want!r}: "
                             f"run every stage with --set overrides.transformer.prediction={model.config.prediction}")
        return model

    def stage_dir(self, stage: str) -> Path:
        return self.work / stage

    def _trainer(self, method, stage_cfg, stage: str) -> Trainer:
        return Trainer(method, stage_cfg, self.stage_dir(stage), name=stage, seed=self.cfg.seed, progress=self.progress,
                       parallel=self.cfg.parallel)

    def _save(self, **parts) -> None:
        if is_main_process():
            save_model_dir(self.out, self.model_cfg, **parts)
        barrier()  # the next stage loads what rank 0 wrote

    # ------------------------------------------------------------------ stages
    @property
    def avatar(self) -> bool:
        """A model with audio input: the stages train on talking faces (distill/avatar_stages.py)."""
        return self.model_cfg.audio is not None

    @property
    def video_data(self):
        """The data config of the videos the VAE learns: talking faces for avatar models, else shapes."""
        if self.avatar:
            from distill.avatar_stages import data_config

            return data_config(self.model_cfg, self.cfg.avatar)
        return self.cfg.data

    def run_vae(self, resume: bool) -> dict:
        from distill.vae_stage import VAEMethod, with_latent_stats

        if self.cfg.model_dir:
            raise StageError("the `vae` stage trains the shapes VAE; with model_dir the folder's VAE is used")
        if self.cfg.vae_from:  # reuse a trained VAE of the same canvas (e.g. the shapes VAE for shapes-avatar)
            vae = VideoVAE.from_pretrained(Path(self.cfg.vae_from) / "vae").to(self.device)
            self.model_cfg = dataclasses.replace(self.model_cfg, vae=vae.cfg)
            self._save(vae=vae)
            return {"step": 0, "copied_from": str(self.cfg.vae_from)}
        base_vae_cfg = dataclasses.replace(self.cfg.model_config().vae, latents_mean=None, latents_std=None)
        torch.manual_seed(self.cfg.seed)
        vae = VideoVAE.from_config(base_vae_cfg).to(self.device)
        if self.cfg.vae_init:  # fine-tune a trained VAE (its latent statistics are measured again below)
            vae.load_state_dict(VideoVAE.from_pretrained(Path(self.cfg.vae_init) / "vae").state_dict())
        method = VAEMethod(vae, self.cfg.vae, self.video_data, seed=rank_seed(self.cfg.seed))  # each rank its own clips
        trainer = self._trainer(method, self.cfg.vae, "vae")
        result = trainer.run(resume=resume)
        trained = trainer.export("vae", VideoVAE.from_config(base_vae_cfg).to(self.device))
        trained = with_latent_stats(trained, self.video_data, self.cfg.vae.stats_clips, self.cfg.seed)
        self.model_cfg = dataclasses.replace(self.model_cfg, vae=trained.cfg)
        self._save(vae=trained)
        return result

    def run_vae_decoder(self, resume: bool) -> dict:
        from distill.vae_stage import DecoderFinetuneMethod

        dc = self.cfg.vae_decoder
        if self.cfg.model_dir or dc.max_steps == 0:
            return {"step": 0, "skipped": True}
        if dc.encode_window is None:  # the latents the student makes: those of the teacher's clips
            dc = dataclasses.replace(dc, encode_window=self.cfg.teacher.clip_latent_frames)
        vae = self.load_vae()
        method = DecoderFinetuneMethod(vae.train(), dc, self.video_data, seed=rank_seed(self.cfg.seed + 5))
        trainer = self._trainer(method, dc, "vae-decoder")
        result = trainer.run(resume=resume)
        trained = trainer.export("vae", VideoVAE.from_pretrained(self.source_dir / "vae").to(self.device))
        self._save(vae=trained.eval())
        return result

    def run_teacher(self, resume: bool) -> dict:
        from distill.latents import load_or_build, null_text
        from distill.teacher_stage import FlowMatchMethod

        if self.cfg.model_dir:
            raise StageError("the `teacher` stage trains the shapes teacher; with model_dir the folder's transformer is the teacher")
        tc = self.cfg.teacher
        vae = self.load_vae()
        text = self.text_encoder()
        path = self.stage_dir("teacher") / "latents.pt"
        if not resume and path.exists() and is_main_process():
            path.unlink()
        start = time.perf_counter()
        barrier()
        if is_main_process():  # rank 0 encodes the dataset; the others read its file
            load_or_build(path, lambda: self._build_latents(vae, text, tc))
        barrier()
        data = self._with_still_leads(path, load_or_build(path, lambda: None), vae)
        encode_s = time.perf_counter() - start
        teacher = random_transformer(self.model_cfg, seed=self.cfg.seed, device=self.device)
        if tc.init_from:
            teacher.load_state_dict(self._init_teacher(Path(tc.init_from)).state_dict())
        schedule = FlowMatchSchedule(self.model_cfg.schedule)
        if self.avatar:
            from distill.avatar_stages import AvatarFlowMatchMethod, dataset_mouth_weights

            if tc.object_weight > 0:
                raise StageError("teacher.object_weight applies to shapes models (avatars weigh the mouth: mouth_weight)")

            mouth = None
            if tc.mouth_weight > 0:
                mouth = dataset_mouth_weights(self._avatar_faces(), len(data["latents"]), self.model_cfg, tc.mouth_weight)
            method = AvatarFlowMatchMethod(teacher, schedule, data, null_text(text), tc, seed=rank_seed(self.cfg.seed),
                                           device=self.device, mouth=mouth)
        else:
            if tc.mouth_weight > 0:
                raise StageError("teacher.mouth_weight applies to avatar models only (their clips are faces with a mouth)")
            objects = None
            if tc.object_weight > 0:  # the clips' videos rendered again (deterministic), not kept in latents.pt
                from distill.latents import latent_object_masks

                objects = latent_object_masks(self.cfg.data, self.cfg.seed + 1, len(data["latents"]),
                                              data["latents"].shape[2], vae.temporal_compression, vae.spatial_compression)
            method = FlowMatchMethod(teacher, schedule, data, null_text(text), tc, seed=rank_seed(self.cfg.seed),
                                     device=self.device, objects=objects)
        trainer = self._trainer(method, tc, "teacher")
        result = trainer.run(resume=resume)
        trained = trainer.export("teacher", CausalWanTransformer(self.model_cfg.transformer).to(self.device))
        self._save(teacher=trained)
        return {**result, "encode_s": round(encode_s, 2)}

    def _init_teacher(self, model_dir: Path) -> CausalWanTransformer:
        """The trained teacher a `teacher.init_from` run starts from; its architecture must be this recipe's, or
        this recipe's with fewer layers or without the video-start embedding, noise skip or refiner (then it is deepened or gains them,
        computing the same function: distill/grow.py), or a flow-predicting one when this recipe's head draws x0 or
        the preconditioned output (its head restarts at zero)."""
        path = model_dir / "teacher"
        if not (path / "config.json").exists():
            raise StageError(f"teacher.init_from: no teacher at {path}")
        trained = CausalWanTransformer.from_pretrained(path, device=self.device).float()
        want = self.model_cfg.transformer
        from distill.grow import with_options

        trained = with_options(trained, want)  # the recipe's video-start embedding, noise skip or refiner, added at zero
        if trained.config.prediction == "flow" and want.prediction != "flow":  # blocks kept, head restarted
            from distill.grow import with_prediction

            trained = with_prediction(trained, want.prediction)
        if trained.config == want:
            return trained
        if dataclasses.replace(want, num_layers=trained.config.num_layers) == trained.config and \
                want.num_layers > trained.config.num_layers:  # a deeper recipe: grow, computing the same function
            from distill.grow import deepen

            return deepen(trained, want)
        raise StageError(f"teacher.init_from: the teacher at {path} is not this recipe's architecture "
                         "(only a recipe with more layers, all else equal, can start from it)")

    def _with_still_leads(self, path: Path, data: dict, vae) -> dict:
        """An avatar model whose stream commits start images as a still video's code
        (`stream.image_still_frames` > 0): the latent dataset gains `lead`, each clip's start image in that
        code (`avatar_stages.still_leads`), computed once and saved beside the latents (rank 0)."""
        still = self.model_cfg.stream.image_still_frames
        if still <= 0:  # the clips' own first latent frames lead (leads saved by a still-code run are not used)
            data.pop("lead", None)
            return data
        if not self.avatar or data.get("lead_still_frames") == still:
            return data
        from distill.avatar_stages import still_leads

        if is_main_process():
            data["lead"] = still_leads(vae, self._avatar_faces(), len(data["latents"]), still, self.cfg.teacher.encode_batch)
            data["lead_still_frames"] = still
            tmp = path.with_suffix(".tmp")
            torch.save(data, tmp)
            tmp.replace(path)
        barrier()
        return data if is_main_process() else torch.load(path, map_location="cpu", weights_only=False)

    def _avatar_faces(self):
        """The talking faces the teacher's latent dataset encodes (clip i is face i)."""
        from distill.avatar_data import AvatarDataset
        from distill.avatar_stages import data_config

        return AvatarDataset(self.cfg.seed + 1, data_config(self.model_cfg, self.cfg.avatar))

    def _build_latents(self, vae, text, tc) -> dict:
        from distill.latents import build_latent_dataset

        if self.avatar:
            from distill.avatar_stages import build_avatar_latents, conditioner

            return build_avatar_latents(vae, text, conditioner(self.model_cfg, vae.temporal_compression),
                                        self._avatar_faces(), tc.num_clips, tc.clip_latent_frames, tc.encode_batch,
                                        self.progress)
        return build_latent_dataset(vae, text, self.cfg.data, tc.num_clips, tc.clip_latent_frames, self.cfg.seed + 1,
                                    tc.encode_batch, self.progress)

    def run_ode_pairs(self, resume: bool) -> dict:
        from distill.ode_pairs import ODEPairStore, prompt_list, sample_ode_pairs

        pc = self.cfg.ode_pairs
        teacher = self.load_transformer("teacher").requires_grad_(False)
        vae = self.load_vae()
        shards = self.stage_dir("ode-pairs")
        if not resume and is_main_process():
            for old in shards.glob("batch-*.safetensors"):
                old.unlink()
        barrier()
        if self.avatar:  # pairs of image-led clips from the teacher's latent dataset, with their audio
            from distill.avatar_stages import sample_avatar_ode_pairs
            from distill.latents import load_or_build, null_text

            path = self.stage_dir("teacher") / "latents.pt"
            data = self._with_still_leads(path, load_or_build(path, lambda: None), vae)
            start = time.perf_counter()
            written = sample_avatar_ode_pairs(teacher, FlowMatchSchedule(self.model_cfg.schedule), data, pc, shards,
                                              seed=self.cfg.seed, device=self.device, progress=self.progress,
                                              null_text=null_text(self.text_encoder()).to(self.device).float())
            return {"pairs": len(ODEPairStore(shards)), "written_by_rank0": written,
                    "elapsed_s": round(time.perf_counter() - start, 2)}
        prompts = prompt_list(pc.prompts, pc.num_pairs, self.cfg.seed + 2, self.cfg.data)
        m = self.model_cfg
        shape = (m.transformer.in_channels, pc.frames, m.latent_height, m.latent_width)
        images = encode = None
        if pc.image_lead_share > 0 and pc.prompts == "shapes":  # the prompts' own clips, encoded as a stream would
            from distill.shapes_data import StartImages
            from models.generator import start_image_latents

            images = StartImages(self.cfg.seed + 2, self.cfg.data)
            encode = lambda image: start_image_latents(vae, m.stream, image)[1].float()  # noqa: E731 (the sink latent)
        start = time.perf_counter()
        # inference only: every rank holds the teacher and samples its own batches (no collectives)
        written = sample_ode_pairs(teacher, self.text_encoder(), FlowMatchSchedule(m.schedule), shape, pc, prompts, shards,
                                   seed=self.cfg.seed, device=self.device, progress=self.progress and is_main_process(),
                                   negative_prompt=self.cfg.negative_prompt, rank=rank(), world_size=world_size(),
                                   images=images, encode_image=encode)
        barrier()
        return {"pairs": len(ODEPairStore(shards)), "written_by_rank0": written,
                "elapsed_s": round(time.perf_counter() - start, 2)}

    def run_ode_init(self, resume: bool) -> dict:
        from distill.ode_init import ODERegressionMethod
        from distill.ode_pairs import ODEPairStore

        try:
            pairs = ODEPairStore(self.stage_dir("ode-pairs"))
        except FileNotFoundError:
            raise StageError(f"no ODE pairs in {self.stage_dir('ode-pairs')}: run the `ode-pairs` stage first") from None
        self.load_vae()
        student = self.load_transformer("teacher")  # the student starts as the teacher
        if self.avatar:
            from distill.avatar_stages import AvatarODERegression as method_class
        else:
            method_class = ODERegressionMethod
        method = method_class(student, FlowMatchSchedule(self.model_cfg.schedule), pairs,
                                     self.model_cfg.stream.chunk_frames, self.cfg.ode_init, seed=self.cfg.seed,
                                     device=self.device)
        trainer = self._trainer(method, self.cfg.ode_init, "ode-init")
        result = trainer.run(resume=resume)
        trained = trainer.export("student", CausalWanTransformer(self.model_cfg.transformer).to(self.device))
        # a fresh student from the teacher: image-led when its pairs were (avatars' clips lead with the identity image)
        self.model_cfg = dataclasses.replace(self.model_cfg, supports_image=self.avatar or bool(pairs.lead.any()))
        self._save(transformer=trained)
        return result

    def run_self_forcing(self, resume: bool) -> dict:
        from distill.ode_pairs import prompt_list
        from distill.self_forcing import SelfForcingDMD
        from distill.shapes_data import StartImages
        from models.generator import StreamingGenerator

        sc = self.cfg.self_forcing
        vae = self.load_vae()
        student = self.load_transformer("student")
        teacher = self.load_transformer("teacher").requires_grad_(False)
        critic = copy.deepcopy(teacher).requires_grad_(True)  # the fake score starts as the teacher
        if sc.lora.rank > 0:  # adapters only: the base weights (out/transformer) stay as they are
            from distill.lora_train import add_lora

            add_lora(student, sc.lora)
            if sc.lora.critic:
                add_lora(critic, sc.lora)
        if sc.real_score:  # a bigger real score (Self-Forcing and LongLive use Wan2.1-T2V-14B)
            teacher = CausalWanTransformer.from_pretrained(sc.real_score, device=self.device).float().requires_grad_(False)
        gen = StreamingGenerator(self.model_cfg, student, vae, self.text_encoder(), device=self.device,
                                 max_batch=sc.batch_size)
        # a prompt file: every line; the shapes dataset: `shapes_prompts` generated prompts
        if self.avatar:
            from distill.avatar_data import AvatarDataset
            from distill.avatar_stages import AvatarSelfForcingDMD, data_config

            faces = AvatarDataset(self.cfg.seed + 3, data_config(self.model_cfg, self.cfg.avatar))
            from distill.latents import null_text

            method = AvatarSelfForcingDMD(gen, teacher, critic, faces, sc, seed=self.cfg.seed,
                                          null_text=null_text(self.text_encoder()).to(self.device).float())
        else:
            prompts = prompt_list(sc.prompts, sc.shapes_prompts if sc.prompts == "shapes" else None, self.cfg.seed + 3,
                                  self.cfg.data)
            images = StartImages(self.cfg.seed + 3, self.cfg.data) if sc.prompts == "shapes" else None  # the prompts' clips
            method = SelfForcingDMD(gen, teacher, critic, prompts, sc, seed=self.cfg.seed,
                                    negative_prompt=self.cfg.negative_prompt, images=images)
        trainer = self._trainer(method, sc, "self-forcing")
        result = trainer.run(resume=resume)
        # the flag follows the weights (with a LoRA run: the student with its adapter): trained from an image
        # now, or before (an avatar's flag is always set: _base_model_config)
        self.model_cfg = dataclasses.replace(self.model_cfg, supports_image=self.model_cfg.supports_image or sc.image_share > 0)
        if sc.lora.rank > 0:
            return {**result, "lora": self._save_lora(trainer, student)}
        trained = trainer.export("student", CausalWanTransformer(self.model_cfg.transformer).to(self.device))
        self._save(transformer=trained)
        return result

    def _save_lora(self, trainer: Trainer, student: CausalWanTransformer) -> str:
        """The student's adapter (its EMA when kept) -> out/lora/, PEFT's layout; transformer/ is left as it was."""
        from distill.lora_train import save_lora

        sc = self.cfg.self_forcing
        ema = trainer.ema.state_dict() if trainer.ema is not None else None  # every rank (FSDP2 gathers)
        out = self.out / "lora"
        if is_main_process():
            save_lora(student, sc.lora, out, weights=ema)
            save_model_dir(self.out, self.model_cfg)
        barrier()
        return str(out)

    # ------------------------------------------------------------------ driver
    RUNNERS = {"vae": "run_vae", "vae-decoder": "run_vae_decoder", "teacher": "run_teacher", "ode-pairs": "run_ode_pairs",
               "ode-init": "run_ode_init", "self-forcing": "run_self_forcing"}

    def run(self, stage: str, resume: bool = False, record: bool = True) -> dict:
        """Run one stage; writes its `done.json` and (with `record`) its entry in `summary.json`."""
        if stage not in self.RUNNERS:
            raise StageError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)} or all")
        start = time.perf_counter()
        result = getattr(self, self.RUNNERS[stage])(resume)
        result = {**result, "wall_s": round(time.perf_counter() - start, 2)}
        if is_main_process():
            self.stage_dir(stage).mkdir(parents=True, exist_ok=True)
            (self.stage_dir(stage) / "done.json").write_text(json.dumps(result, indent=2) + "\n")
            if record:
                self._record(stage, result)
        return result

    def _record(self, stage: str, result: dict) -> None:
        summary_path = self.work / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        summary[stage] = result
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")

    def _start_beside(self, stage: str, resume: bool):
        """Run `stage` in a child process (spawned, no progress bar) while this one goes on."""
        import multiprocessing

        process = multiprocessing.get_context("spawn").Process(
            target=_run_stage_in_child, args=(self.cfg, stage, resume), name=f"framecast-{stage}")
        process.start()
        print(f"[distill] {stage} runs in a second process (pid {process.pid}) beside the next stage; "
              f"log: {self.stage_dir(stage) / 'log.jsonl'}", flush=True)
        return process

    def _join_beside(self, stage: str, process) -> dict:
        process.join()
        done = self.stage_dir(stage) / "done.json"
        if process.exitcode != 0 or not done.exists():
            raise StageError(f"the {stage} stage failed in its process (exit code {process.exitcode}); "
                             f"rerun it alone: framecast distill {stage} --config ... --resume")
        result = json.loads(done.read_text())
        self._record(stage, result)
        return result

    def run_all(self, resume: bool = False) -> dict:
        """Every stage in order (vae/teacher skipped when model_dir supplies them); with `resume`,
        stages that finished before are skipped and an interrupted one continues."""
        results = {}
        beside = None  # the vae-decoder process running beside the teacher
        for stage in STAGES:
            if self.cfg.model_dir and stage in ("vae", "vae-decoder", "teacher"):
                continue
            if resume and (self.stage_dir(stage) / "done.json").exists():
                results[stage] = json.loads((self.stage_dir(stage) / "done.json").read_text())
            elif (stage == "vae-decoder" and self.cfg.vae_decoder.beside_teacher and self.cfg.vae_decoder.max_steps > 0
                  and not launched()):
                beside = self._start_beside(stage, resume)  # the teacher only needs the (frozen) encoder
            else:
                results[stage] = self.run(stage, resume=resume)
            if stage == "teacher" and beside is not None:
                results["vae-decoder"] = self._join_beside("vae-decoder", beside)
                beside = None
        if beside is not None:
            results["vae-decoder"] = self._join_beside("vae-decoder", beside)
        self.finalize()
        return results

    def finalize(self) -> None:
        """Complete the model directory: framecast.json, and for Wan the VAE and text encoder."""
        if not is_main_process():
            return
        if self.cfg.model_dir:
            src = Path(self.cfg.model_dir)
            for part in ("vae", "text_encoder", "tokenizer"):
                if (src / part).is_dir() and not (self.out / part).exists():
                    shutil.copytree(src / part, self.out / part)
            if not (self.out / "teacher").exists() and (src / "transformer").is_dir():
                shutil.copytree(src / "transformer", self.out / "teacher")
        save_model_dir(self.out, self.model_cfg)


def _run_stage_in_child(cfg: DistillConfig, stage: str, resume: bool) -> None:
    """Entry point of a stage run in its own process by `Pipeline.run_all` (results go to done.json)."""
    Pipeline(cfg, progress=False).run(stage, resume=resume, record=False)
