# dev: one on-demand task, a second one on Spot under load.

module "realtime" {
  source = "../../modules/realtime"

  project     = "zedi"
  environment = "dev"
  aws_region  = var.aws_region

  # Sizing from the seed documents: 256 CPU units / 512 MiB, 1 to 2 tasks, 100 connections
  # per task. The container port is the module's default, config/default.toml server.port (1234).
  cpu                  = 256
  memory               = 512
  min_count            = 1
  max_count            = 2
  connections_per_task = 100

  image              = var.image
  vpc_id             = var.vpc_id
  public_subnet_ids  = var.public_subnet_ids
  private_subnet_ids = var.private_subnet_ids
  certificate_arn    = var.certificate_arn
  route53_zone_id    = var.route53_zone_id
  domain_name        = var.domain_name

  database_security_group_id         = var.database_security_group_id
  redis_security_group_id            = var.redis_security_group_id
  metrics_scraper_security_group_ids = var.metrics_scraper_security_group_ids

  database_url_secret_arn = var.database_url_secret_arn
  redis_url_secret_arn    = var.redis_url_secret_arn
  jwt_secret_arn          = var.jwt_secret_arn
  secrets_kms_key_arns    = var.secrets_kms_key_arns

  cognito_user_pool_id   = var.cognito_user_pool_id
  cognito_app_client_ids = var.cognito_app_client_ids
  allowed_origins        = var.allowed_origins

  log_level               = "info"
  log_retention_days      = 30
  alb_deletion_protection = false
}
