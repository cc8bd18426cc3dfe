# zedi-sync on ECS Fargate: cluster, task definition, service (ops/README.md maps it onto the
# architecture). Load balancer in alb.tf, security groups in network.tf, IAM in iam.tf,
# autoscaling in autoscaling.tf.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  name           = "${var.project}-${var.environment}"
  service_name   = "${var.project}-realtime"
  container_name = "zedi-sync"

  # The ActiveConnections metric the daemon publishes ([cloudwatch] in config/default.toml) and
  # the target-tracking policy reads. ops/check_consistency.py checks that the dev environment
  # resolves to the daemon's defaults.
  metric_namespace      = "${var.project}/${var.environment}"
  metric_name           = "ActiveConnections"
  metric_dimensions     = { ServiceName = local.service_name }
  metric_dimensions_env = join(",", [for k in sort(keys(local.metric_dimensions)) : "${k}=${local.metric_dimensions[k]}"])

  # Published beside it, same namespace and dimensions: the memory budget's use in percent
  # (cloudwatch.memory_metric_name), which the alarm in alarms.tf watches.
  memory_metric_name = "MemoryPressure"

  # Stopping a task (deploy, scale-in, Spot interruption), in ECS's order:
  #  1. ECS deregisters it from the target group: no new WebSockets reach it; the open ones keep
  #     working for deregistration_delay, then the ALB closes them (the providers reconnect and
  #     land on another task). WebSockets never finish by themselves, so a longer delay would only
  #     slow deploys down. (/health's 503 while draining covers a SIGTERM that does not come from
  #     ECS: the ALB takes the target out after two failed checks, 20 s.)
  #  2. ECS sends SIGTERM: the daemon drains (/health 503, refuse new sockets, flush documents,
  #     release leases, close what is left with a reconnect-friendly code) within its 25 s drain
  #     deadline, and exits.
  #  3. SIGKILL stop_timeout seconds after SIGTERM: 30 s (Fargate's default), 5 s above the
  #     drain deadline, so a drain is never cut short. A Spot task gets both windows (60 s)
  #     inside its two-minute warning.
  stop_timeout_secs         = 30
  deregistration_delay_secs = 30
  drain_deadline_ms         = 25000 # server.drain_deadline_ms, set explicitly to keep the three together

  log_group_name = "/ecs/${local.name}/realtime"
  cognito_region = var.cognito_region != "" ? var.cognito_region : var.aws_region

  # Container environment; empty values are left out so the daemon's defaults apply.
  environment = merge(
    { for k, v in {
      PORT                                 = tostring(var.container_port)
      ZEDI__SERVER__DRAIN_DEADLINE_MS      = tostring(local.drain_deadline_ms)
      ZEDI__LOG__FORMAT                    = "json"
      ZEDI__LOG__LEVEL                     = var.log_level
      ZEDI__STORE__KIND                    = "postgres"
      ZEDI__STORE__SSLMODE                 = var.database_sslmode
      ZEDI__STORE__SSL_ROOT_CERT           = var.database_ssl_root_cert
      ZEDI__CLOUDWATCH__MODE               = "api"
      ZEDI__CLOUDWATCH__NAMESPACE          = local.metric_namespace
      ZEDI__CLOUDWATCH__METRIC_NAME        = local.metric_name
      ZEDI__CLOUDWATCH__DIMENSIONS         = local.metric_dimensions_env
      ZEDI__CLOUDWATCH__MEMORY_METRIC_NAME = local.memory_metric_name
      ZEDI__CLOUDWATCH__REGION             = var.aws_region
      COGNITO_USER_POOL_ID                 = var.cognito_user_pool_id
      COGNITO_REGION                       = var.cognito_user_pool_id != "" ? local.cognito_region : ""
      ZEDI__AUTH__AUDIENCES                = join(",", var.cognito_app_client_ids)
      ALLOWED_ORIGINS                      = join(",", var.allowed_origins)
    } : k => v if v != "" },
    var.extra_environment,
  )

  # Secrets Manager values injected by the ECS agent (execution role) at task start.
  secrets = { for k, v in {
    DATABASE_URL = var.database_url_secret_arn
    REDIS_URL    = var.redis_url_secret_arn
    JWT_SECRET   = var.jwt_secret_arn
  } : k => v if v != null }

  # valueFrom may select a JSON key (arn:...:secret:name-AbCdEf:key::); IAM wants the secret ARN,
  # which is the first seven ':'-separated fields.
  secret_arns = distinct([for v in values(local.secrets) : join(":", slice(split(":", v), 0, 7))])

  tags = merge(var.tags, { Service = local.service_name, Environment = var.environment })
}

# ---- cluster ---------------------------------------------------------------------------------

resource "aws_ecs_cluster" "this" {
  name = local.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = local.tags
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE", "FARGATE_SPOT"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    base              = var.fargate_base_count
    weight            = 0
  }

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE_SPOT"
    weight            = 1
  }
}

# ---- logs ------------------------------------------------------------------------------------

resource "aws_kms_key" "logs" {
  description             = "${local.name} realtime: CloudWatch Logs encryption"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.logs_key.json
  tags                    = local.tags
}

resource "aws_kms_alias" "logs" {
  name          = "alias/${local.name}-realtime-logs"
  target_key_id = aws_kms_key.logs.key_id
}

data "aws_iam_policy_document" "logs_key" {
  # checkov:skip=CKV_AWS_109:Standard key policy statement: the account root administers its own key through IAM; "*" in a key policy means this key only.
  # checkov:skip=CKV_AWS_111:Same statement as above; a key policy's resource is always the key itself.
  # checkov:skip=CKV_AWS_356:Same statement as above; "*" in a key policy is the key itself.
  statement {
    sid       = "AccountAdministersKey"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogsUsesKeyForThisLogGroup"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${var.aws_region}.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${var.aws_region}:${data.aws_caller_identity.current.account_id}:log-group:${local.log_group_name}"]
    }
  }
}

resource "aws_cloudwatch_log_group" "this" {
  # checkov:skip=CKV_AWS_338:Retention is per environment (var.log_retention_days): 365 days by default and in prod, 30 in dev.
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
  tags              = local.tags
}

# ---- task definition -------------------------------------------------------------------------

resource "aws_ecs_task_definition" "realtime" {
  family                   = "${local.name}-realtime"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([
    {
      name      = local.container_name
      image     = var.image
      essential = true

      portMappings = [
        {
          name          = "http"
          containerPort = var.container_port
          hostPort      = var.container_port
          protocol      = "tcp"
          appProtocol   = "http"
        }
      ]

      environment = [for k in sort(keys(local.environment)) : { name = k, value = local.environment[k] }]
      secrets     = [for k in sort(keys(local.secrets)) : { name = k, valueFrom = local.secrets[k] }]

      # The daemon writes nothing to disk with the PostgreSQL store (forced above); logs go to
      # stderr. The image runs as uid 10001 (Dockerfile USER). ECS Exec's agent needs a writable
      # root filesystem, so enabling it lifts this.
      readonlyRootFilesystem = !var.enable_execute_command
      privileged             = false
      stopTimeout            = local.stop_timeout_secs

      # Same probe as the Dockerfile's HEALTHCHECK (ECS ignores that one). startPeriod covers
      # migrations, retried for store.startup_timeout_ms (60 s).
      healthCheck = {
        command     = ["CMD", "/usr/local/bin/zedi-sync", "healthcheck"]
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 60
      }

      # One descriptor per WebSocket, plus PostgreSQL / Redis pools.
      ulimits = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]

      # A tiny init as PID 1 forwards SIGTERM and reaps ECS Exec's processes.
      linuxParameters = { initProcessEnabled = true }

      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.this.name
          awslogs-region        = var.aws_region
          awslogs-stream-prefix = "zedi-sync"
          # A slow CloudWatch Logs must never block the daemon's stderr.
          mode            = "non-blocking"
          max-buffer-size = "25m"
        }
      }
    }
  ])

  tags = local.tags
}

# ---- service ---------------------------------------------------------------------------------

resource "aws_ecs_service" "realtime" {
  name                    = local.service_name
  cluster                 = aws_ecs_cluster.this.id
  task_definition         = aws_ecs_task_definition.realtime.arn
  desired_count           = var.min_count
  platform_version        = "LATEST"
  enable_execute_command  = var.enable_execute_command
  propagate_tags          = "SERVICE"
  enable_ecs_managed_tags = true

  # Rolling deploys start the new tasks before stopping old ones; connections move over as the
  # old tasks drain (editors reconnect through the ALB).
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = 60

  # A base of on-demand FARGATE tasks that Spot interruptions cannot take away; everything
  # above it on FARGATE_SPOT (two minutes' warning, then the same SIGTERM drain).
  capacity_provider_strategy {
    capacity_provider = "FARGATE"
    base              = var.fargate_base_count
    weight            = 0
  }

  capacity_provider_strategy {
    capacity_provider = "FARGATE_SPOT"
    weight            = 1
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.task.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.realtime.arn
    container_name   = local.container_name
    container_port   = var.container_port
  }

  # realtime.{project}-{environment}.internal: one A record per task, for Prometheus' dns_sd.
  service_registries {
    registry_arn = aws_service_discovery_service.realtime.arn
  }

  lifecycle {
    # The autoscaling policies own the running count.
    ignore_changes = [desired_count]
  }

  depends_on = [
    aws_lb_listener.https,
    aws_ecs_cluster_capacity_providers.this,
    aws_iam_role_policy.execution,
  ]

  tags = local.tags
}

# ---- service discovery (Prometheus) ------------------------------------------------------------

resource "aws_service_discovery_private_dns_namespace" "this" {
  name        = "${local.name}.internal"
  description = "${local.name}: task addresses for Prometheus scraping"
  vpc         = var.vpc_id
  tags        = local.tags
}

resource "aws_service_discovery_service" "realtime" {
  name = "realtime"

  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.this.id
    routing_policy = "MULTIVALUE"

    dns_records {
      type = "A"
      ttl  = 10
    }
  }

  # ECS reports task health to Cloud Map. failure_threshold is deprecated by AWS (always 1) but
  # the block is still needed for ECS-managed registration; the provider warns about it.
  health_check_custom_config {
    failure_threshold = 1
  }

  tags = local.tags
}
