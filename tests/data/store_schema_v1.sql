-- The run store as the first released harness made it (commit de1d1b2, schema version 1, before schema versions
-- were recorded): `harness run cnn --epochs 1` twice on the built-in demo data, then the SQLite file dumped as text
-- (CREATE statements verbatim from sqlite_master). The rows are portable SQL (TRUE, not 1, for a boolean), so the
-- PostgreSQL test loads the same file with DATETIME read as TIMESTAMP WITHOUT TIME ZONE, the type SQLAlchemy gives it
-- there. tests/test_migrations.py builds stores from it.

CREATE TABLE harness_runs (
	run_id VARCHAR(120) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	architecture VARCHAR(120) NOT NULL, 
	origin VARCHAR(32) NOT NULL, 
	study VARCHAR(200), 
	trial INTEGER, 
	tuner VARCHAR(32), 
	spec JSON NOT NULL, 
	hyperparameters JSON, 
	val_accuracy FLOAT, 
	val_auc FLOAT, 
	val_loss FLOAT, 
	best_epoch INTEGER, 
	epochs_run INTEGER, 
	seconds FLOAT, 
	images_per_second FLOAT, 
	parameters BIGINT, 
	n_train INTEGER, 
	n_val INTEGER, 
	dataset VARCHAR(200), 
	synthetic BOOLEAN, 
	backend VARCHAR(32), 
	environment JSON, 
	artifacts TEXT, 
	submission TEXT, 
	error TEXT, 
	host VARCHAR(255), 
	pid INTEGER, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (run_id)
);

CREATE INDEX ix_harness_runs_status ON harness_runs (status);
CREATE INDEX ix_harness_runs_study ON harness_runs (study);

INSERT INTO harness_runs (run_id, status, architecture, origin, study, trial, tuner, spec, hyperparameters, val_accuracy, val_auc, val_loss, best_epoch, epochs_run, seconds, images_per_second, parameters, n_train, n_val, dataset, synthetic, backend, environment, artifacts, submission, error, host, pid, created_at, updated_at) VALUES
  ('20261127-221635-cnn-fb6348', 'complete', 'cnn', 'baseline', NULL, NULL, NULL, '{"architecture": "cnn", "arch_kwargs": {}, "training": {"epochs": 1, "batch_size": 50, "optimizer": {"name": "adam", "learning_rate": 0.001, "kwargs": {}}, "time_limit": null, "predict_batch_size": 512}, "data": {"protocol": "seed", "sample": null, "seed": 101, "val_fraction": 0.15}, "seed": 101, "origin": {"kind": "baseline", "study": null, "trial": null, "tuner": null}}', 'null', 0.4935064935064935, 0.5, 8.163710833602272, 1, 1, 24.826536111000678, 21.16247119029377, 36350881, 435, 77, '/tmp/v1res/demo-data', TRUE, 'tensorflow', '{"harness": "0.1.0", "python": "3.11.7", "platform": "Linux-6.18.44-fc-v657-x86_64-with-glibc2.36", "host": "vm", "pid": 14132, "keras": "3.15.1", "backend": "tensorflow", "backend_version": "2.21.0", "numpy": "2.4.6", "devices": ["CPU"], "cpu_count": 2, "git_commit": null}', '/tmp/v1res/runs/20261127-221635-cnn-fb6348', '/tmp/v1res/runs/20261127-221635-cnn-fb6348/submission.csv', NULL, 'vm', 14132, '2026-11-27 22:16:35.147737', '2026-11-27 22:17:06.730936');

INSERT INTO harness_runs (run_id, status, architecture, origin, study, trial, tuner, spec, hyperparameters, val_accuracy, val_auc, val_loss, best_epoch, epochs_run, seconds, images_per_second, parameters, n_train, n_val, dataset, synthetic, backend, environment, artifacts, submission, error, host, pid, created_at, updated_at) VALUES
  ('20261127-221756-cnn-365a3f', 'complete', 'cnn', 'baseline', NULL, NULL, NULL, '{"architecture": "cnn", "arch_kwargs": {}, "training": {"epochs": 1, "batch_size": 32, "optimizer": {"name": "adam", "learning_rate": 0.001, "kwargs": {}}, "time_limit": null, "predict_batch_size": 512}, "data": {"protocol": "seed", "sample": null, "seed": 7, "val_fraction": 0.15}, "seed": 7, "origin": {"kind": "baseline", "study": null, "trial": null, "tuner": null}}', 'null', 0.5324675324675324, 0.5, 7.535733084863634, 1, 1, 51.26034881600026, 10.750538766907878, 36350881, 435, 77, '/tmp/v1res/demo-data', TRUE, 'tensorflow', '{"harness": "0.1.0", "python": "3.11.7", "platform": "Linux-6.18.44-fc-v657-x86_64-with-glibc2.36", "host": "vm", "pid": 16091, "keras": "3.15.1", "backend": "tensorflow", "backend_version": "2.21.0", "numpy": "2.4.6", "devices": ["CPU"], "cpu_count": 2, "git_commit": null}', '/tmp/v1res/runs/20261127-221756-cnn-365a3f', '/tmp/v1res/runs/20261127-221756-cnn-365a3f/submission.csv', NULL, 'vm', 16091, '2026-11-27 22:17:56.700186', '2026-11-27 22:19:07.143180');
