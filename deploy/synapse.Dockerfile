# Synapse with UnityPlan's badge gate installed into its environment as a package
# (`pip install ./synapse/modules`, the unityplan-gate distribution), not mounted on PYTHONPATH.
#
#   docker compose build synapse-dk
FROM matrixdotorg/synapse:v1.163.2
COPY synapse/modules /tmp/unityplan-gate
RUN pip install --no-cache-dir /tmp/unityplan-gate && rm -rf /tmp/unityplan-gate
